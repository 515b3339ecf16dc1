"""Prompts: the chat layout of every task, with placeholders for scene and view tokens.

    pieces = build_prompt(query, num_objects=32, view_slots=[4, 4], tokenizer=tok)

The user turn starts with the scene (one `<ref>k</ref>` marker, optionally the detector's class
name — a small LLM then matches "the door" to a proposal by reading, and uses the token for
colour, size and position — followed by one scene-token slot per object proposal) and the selected views (a marker and the view's token slots), then the
task instruction. The model answers `<think>…</think><answer>…</answer>` and refers to
objects with `<ref>k</ref>` (answer.py). Slots are filled with embeddings by the model; this
module only lays out text and slot positions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from r1_core.model.answer import REF_CLOSE, REF_OPEN, format_box
from r1_core.query import SceneQuery

SCENE_PLACEHOLDER = "<scene>"
VIEWS_PLACEHOLDER = "<views>"

SYSTEM_PROMPT = (
    "You are r1, the 3D scene reasoning module of a robot. The scene is a list of objects "
    "<ref>k</ref> in the map frame (metres, z up). Think briefly inside <think></think>, then "
    "answer inside <answer></answer>; refer to an object as <ref>k</ref>."
)

INSTRUCTIONS = {
    "grounding": "Find the object: {text}",
    "qa": "Question: {text}",
    "reasoning": "Question: {text}",
    "dense_caption": "Describe each object in the scene with its location.",
    "object_caption": "Describe the object {target}.",
    "dialogue": "{text}",
    "planning": "Plan the steps to: {text}",
}


@dataclass
class PromptPiece:
    """Either text or a run of `slots` embedding slots of one kind ("scene" or "view")."""

    text: str = ""
    kind: str = ""        # "" for text, else "scene" / "view"
    slots: int = 0
    index: int = 0        # which object / view the slots belong to


def scene_section(num_objects: int, labels: list[str] | None = None) -> list[PromptPiece]:
    """`<ref>k</ref>` (+ the detector's class name, when given) then the object's token slot."""
    if labels is not None and len(labels) != num_objects:
        raise ValueError(f"scene_section: {len(labels)} labels for {num_objects} objects")
    out: list[PromptPiece] = []
    for k in range(num_objects):
        name = f" {labels[k]}" if labels is not None else ""
        out.append(PromptPiece(text=f"{REF_OPEN}{k}{REF_CLOSE}{name}"))
        out.append(PromptPiece(kind="scene", slots=1, index=k))
    return out


def view_section(view_slots: list[int]) -> list[PromptPiece]:
    out: list[PromptPiece] = []
    for v, n in enumerate(view_slots):
        out.append(PromptPiece(text=f"<view{v}>"))
        out.append(PromptPiece(kind="view", slots=n, index=v))
    return out


def user_text(query: SceneQuery, target_ref: int | None = None) -> str:
    """The task instruction. An object_caption target is named by the proposal it matches
    (`<ref>k</ref>`, which the model can attend to) or, failing that, by its box literal."""
    if query.target_box is None:
        target = ""
    elif target_ref is not None:
        target = f"{REF_OPEN}{target_ref}{REF_CLOSE}"
    else:
        target = "at " + format_box(query.target_box)
    return INSTRUCTIONS[query.task].format(text=query.text.strip(), target=target)


def chat_messages(query: SceneQuery, system_prompt: str = SYSTEM_PROMPT,
                  target_ref: int | None = None) -> list[dict]:
    """System, then one user turn: scene, views, the dialogue history (if any) and the task.

    History is written into the user turn as `user: …` / `assistant: …` lines, the layout of
    the dialogue questions of Scene-30K records (r1_core.data.cot) that the model trains on,
    rather than as separate chat turns."""
    if query.history and len(query.history) % 2 != 0:
        raise ValueError(f"history: expected alternating user/assistant turns (an even count), "
                         f"got {len(query.history)} turns")
    past = "".join(f"{'user' if i % 2 == 0 else 'assistant'}: {turn.strip()}\n" for i, turn in enumerate(query.history))
    content = f"{SCENE_PLACEHOLDER}{VIEWS_PLACEHOLDER}\n{past}{user_text(query, target_ref)}"
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": content}]


def build_prompt(query: SceneQuery, num_objects: int, view_slots: list[int], tokenizer,
                 system_prompt: str = SYSTEM_PROMPT, target_ref: int | None = None,
                 object_labels: list[str] | None = None) -> list[PromptPiece]:
    """The prompt as pieces: chat-template text with the scene and view sections spliced in."""
    text = tokenizer.apply_chat_template(chat_messages(query, system_prompt, target_ref), tokenize=False,
                                         add_generation_prompt=True)
    parts = re.split(f"({re.escape(SCENE_PLACEHOLDER)}|{re.escape(VIEWS_PLACEHOLDER)})", text)
    pieces: list[PromptPiece] = []
    for part in parts:
        if part == SCENE_PLACEHOLDER:
            pieces += scene_section(num_objects, object_labels)
        elif part == VIEWS_PLACEHOLDER:
            pieces += view_section(view_slots)
        elif part:
            pieces.append(PromptPiece(text=part))
    return pieces


def boxes_to_refs(text: str, gt_boxes: np.ndarray, proposal_boxes: np.ndarray, min_iou: float,
                  iou_fn) -> tuple[str, bool]:
    """Rewrite each `<box>…</box>` of a training target as `<ref>k</ref>` of the proposal that
    overlaps it most (IoU >= min_iou).

    `gt_boxes` are the parsed boxes of `text` in order; iou_fn(a (N,7), b (M,7)) -> (N, M).
    Returns (text, ok): ok is False when a box inside `<answer>` matches no proposal (the
    example cannot be learned by pointing and should be dropped). An unmatched box inside
    the reasoning is removed together with a preceding "at " — the object is still named,
    only its location is left out."""
    from r1_core.model.answer import _BOX_RE, ANSWER_OPEN

    if len(gt_boxes) == 0:
        return text, True
    if len(proposal_boxes) == 0:
        return text, False
    iou = np.asarray(iou_fn(np.asarray(gt_boxes, np.float32), np.asarray(proposal_boxes, np.float32)))
    best = iou.argmax(axis=1)
    matched = iou[np.arange(len(best)), best] >= min_iou
    answer_at = text.find(ANSWER_OPEN)
    out, last, ok = [], 0, True
    for i, m in enumerate(_BOX_RE.finditer(text)):
        in_answer = answer_at >= 0 and m.start() > answer_at
        start = m.start()
        if matched[i]:
            repl = f"{REF_OPEN}{int(best[i])}{REF_CLOSE}"
        else:
            ok = ok and not in_answer
            repl = ""
            if text[max(last, start - 3):start] == "at ":
                start -= 3
            while start > last and text[start - 1] == " ":
                start -= 1
        out.append(text[last:start] + repl)
        last = m.end()
    out.append(text[last:])
    return "".join(out), ok
