"""Test configuration: DDS on loopback with a private domain, no hub access, gpu marker."""
import os

# Set before anything imports rclpy or transformers; inherited by every child process.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 60))  # 150..209: private per run
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run on the GPU machine (pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_RECIPE = "config/train/tiny.yaml"
TINY_WORLD = {"pack.frames": 20, "pack.caption_per_scene": 2}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A tiny synthetic dataset (2 train + 1 val scenes), a stage-0 detector and a training
    pack built with config/train/tiny.yaml, once per session. Returns (root, recipe); tests
    that change the recipe load their own copy (training.recipe.load_recipe)."""
    from r1_core.data.scene import load_scannet_scene
    from r1_core.data.synthetic.dataset import write_dataset
    from r1_core.data.tasks import DatasetLayout
    from training.detector import train_detector
    from training.pack import build_pack
    from training.recipe import load_recipe

    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", train_scenes=2, val_scenes=1, seed=5, progress=False)
    recipe = load_recipe(TINY_RECIPE, overrides=TINY_WORLD)
    lay = DatasetLayout(root / "data")
    scenes = [load_scannet_scene(lay.scannet_dir, s) for s in lay.scene_ids("train")]
    train_detector(recipe.model.encoder, recipe.detector, lambda: scenes, [], root / "detector", progress=False)
    build_pack(root / "data", root / "pack", recipe.pack, encoder_cfg=recipe.model.encoder,
               detector=root / "detector", progress=False)
    return root, recipe
