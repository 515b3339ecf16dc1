"""Scene-30K engine: template CoT passes the paper's filters and is grounded (answer boxes are
the targets'); each filter rejects what it should; the OpenAI-compatible backend against a fake
server on 127.0.0.1; the transformers backend with a tiny random local model."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from r1_core.data import formats as F
from r1_core.data.cot import CotConfig, CotEngine, CotFilterConfig, box_iou, check_cot, load_scene_graph
from r1_core.data.synthetic.demo import ensure_demo_assets
from r1_core.data.tasks import DatasetLayout
from r1_core.model.answer import format_box, parse_response


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_assets(tmp_path_factory.mktemp("demo"), frames=2)


@pytest.mark.parametrize("positions", ["boxes", "coords"])
def test_template_records_pass_filters_and_are_grounded(demo, tmp_path, positions):
    lay = DatasetLayout(demo.dataset_root)
    out = tmp_path / "s30k.jsonl"
    st = CotEngine(CotConfig(positions=positions), lay).run("train", out, progress=False)
    recs = F.read_scene30k(out)
    assert st.kept == len(recs) > 40 and st.rejected <= 0.02 * (st.kept + st.rejected)
    g = load_scene_graph(lay, recs[0].scene_id)
    tasks = {r.meta["task"] for r in recs}
    assert {"grounding", "qa", "dialogue", "planning"} <= tasks
    cfg = CotFilterConfig()
    for r in recs:
        p = parse_response(r.cot)
        assert len(p.reasoning.split()) >= cfg.min_think_words
        if r.meta["task"] == "grounding":
            oid = r.meta["object_ids"][0]
            n = g.nodes[oid]
            box = np.concatenate([(n.lo + n.hi) / 2, n.hi - n.lo])
            np.testing.assert_allclose(p.boxes[0][:6], box, atol=0.006)   # the target's box (2-decimal grammar)
            assert n.label in p.answer
            where = format_box(box) if positions == "boxes" else f"({n.center[0]:.1f}, {n.center[1]:.1f})"
            assert where in p.reasoning                                   # the reasoning points at the target
    with pytest.raises(ValueError, match="unknown positions"):
        CotConfig(positions="polar")
    with pytest.raises(ValueError, match=r"sources: expected annotation sources among .* got \['scanreffer'\]"):
        CotConfig(sources=("scanreffer",))


def test_filters_reject_each_failure():
    cfg = CotFilterConfig()
    good_think = ("First, the question asks about the chair. Next, the relevant objects are a red chair at (1.0, 2.0) "
                  "and a blue chair at (3.0, 1.0). Then, counting them gives 2. Finally, for the chair, the answer is 2.")
    q = "how many chairs are in the room?"
    assert check_cot(f"<think>{good_think}</think><answer>2</answer>", q, ["2", "two"], None, cfg).ok
    assert check_cot(f"<think>{good_think}</think><answer>two</answer>", q, ["2", "two"], None, cfg).ok
    r = check_cot(f"<think>{good_think}</think><answer>5</answer>", q, ["2", "two"], None, cfg)
    assert not r.ok and r.reasons[0].startswith("inconsistent")
    r = check_cot("<think>It is 2.</think><answer>2</answer>", q, ["2"], None, cfg)
    assert not r.ok and any(x.startswith("think_too_short") for x in r.reasons) and any(x.startswith("insufficient_steps") for x in r.reasons)
    r = check_cot("the answer is 2", q, ["2"], None, cfg)
    assert not r.ok and r.reasons[0].startswith("format")
    no_ref = good_think.replace("Finally, for the chair, the answer is 2.", "Finally, that settles it for good.")
    r = check_cot(f"<think>{no_ref}</think><answer>2</answer>", q, ["2"], None, cfg)
    assert r.reasons == ["final_step_no_question_ref: the last step mentions nothing the question asks about"]
    box = np.array([1, 2, 0.5, 0.5, 0.5, 1.0, 0])
    ground = good_think.replace("counting them gives 2", "the red one is next to the bed")
    ok = check_cot(f"<think>{ground}</think><answer>the chair {format_box(box)}</answer>", "the red chair", [], box[None], cfg)
    assert ok.ok
    far = box.copy(); far[0] += 0.6
    r = check_cot(f"<think>{ground}</think><answer>the chair {format_box(far)}</answer>", "the red chair", [], box[None], cfg)
    assert not r.ok and "IoU" in r.reasons[0]
    r = check_cot(f"<think>{ground}</think><answer>the chair</answer>", "the red chair", [], box[None], cfg)
    assert r.reasons == ["inconsistent: the answer has no box"]


def test_box_iou_bruteforce():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.r_[rng.uniform(0, 1, 3), rng.uniform(0.2, 1, 3)]
        b = np.r_[a[:3] + rng.uniform(-0.4, 0.4, 3), rng.uniform(0.2, 1, 3)]
        g = rng.uniform(-1, 2, (200000, 3))
        ina = np.all(np.abs(g - a[:3]) <= a[3:] / 2, 1)
        inb = np.all(np.abs(g - b[:3]) <= b[3:] / 2, 1)
        assert abs(box_iou(a, b) - (ina & inb).sum() / max((ina | inb).sum(), 1)) < 0.03


class _FakeChat(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeChat.requests.append((self.path, dict(self.headers), body))
        if body["model"] == "broken":
            self.send_response(500); self.end_headers(); self.wfile.write(b"overloaded"); return
        prompt = body["messages"][-1]["content"]
        ref = prompt.split("Reference answer: ", 1)[1].split("\n", 1)[0]
        q = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
        text = (f"<think>First, I read the question. Next, I check the listed objects and their positions. Then, I compare them "
                f"with what is asked. Finally, about {q} the answer follows.</think><answer>{ref}</answer>")
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_server():
    srv = HTTPServer(("127.0.0.1", 0), _FakeChat)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _FakeChat.requests = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown(); th.join()


def test_openai_backend_against_fake_server(demo, fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("R1_TEST_KEY", "sk-test")
    cfg = CotConfig(backend="openai", base_url=fake_server, model="fake-model", api_key_env="R1_TEST_KEY",
                    sources=("scanqa", "scanrefer"), max_per_scene=6)
    st = CotEngine(cfg, demo.dataset_root).run("train", tmp_path / "out.jsonl", progress=False)
    assert st.kept + st.rejected == 6 and st.kept >= 1
    path, headers, body = _FakeChat.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "fake-model"
    assert headers["Authorization"] == "Bearer sk-test" and body["messages"][0]["role"] == "system"
    assert "bed (id" in body["messages"][-1]["content"]          # the scene's objects are in the prompt
    for r in F.read_scene30k(tmp_path / "out.jsonl"):
        assert r.meta["source"] in ("scanqa", "scanrefer")
    bad = CotConfig(backend="openai", base_url=fake_server, model="broken", sources=("scanqa",), max_per_scene=1)
    with pytest.raises(RuntimeError, match="HTTP 500"):
        CotEngine(bad, demo.dataset_root).run("train", tmp_path / "o2.jsonl", progress=False)
    unreachable = CotConfig(backend="openai", base_url="http://127.0.0.1:9/v1", sources=("scanqa",), max_per_scene=1, timeout_s=2)
    with pytest.raises(RuntimeError, match="unreachable"):
        CotEngine(unreachable, demo.dataset_root).run("train", tmp_path / "o3.jsonl", progress=False)


def _tiny_model(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for t in ("<s>", "</s>", "<pad>"):
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    import torch
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                      bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"])
    LlamaForCausalLM(cfg).save_pretrained(path)


def test_transformers_backend_runs_and_filters_garbage(demo, tmp_path):
    _tiny_model(tmp_path / "tiny")
    cfg = CotConfig(backend="transformers", model_path=str(tmp_path / "tiny"), sources=("scanqa",), max_per_scene=2,
                    max_new_tokens=6)
    eng = CotEngine(cfg, demo.dataset_root)
    s = eng.samples("train")[0]
    text = eng.backend.generate(s, load_scene_graph(DatasetLayout(demo.dataset_root), s.scene_id))
    assert isinstance(text, str) and len(text) > 0                  # it generated something …
    st = eng.run("train", tmp_path / "o.jsonl", progress=False)
    assert st.kept == 0 and st.rejected == 2 and st.reasons["format"] == 2   # … which the filters reject
    with pytest.raises(FileNotFoundError, match="model directory"):
        CotEngine(CotConfig(backend="transformers", model_path=str(tmp_path / "nope")), demo.dataset_root)
    with pytest.raises(ValueError, match="unknown CoT backend"):
        CotConfig(backend="gemini")
