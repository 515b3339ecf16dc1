"""How much R1-nano's proposals on a fused cloud depend on the encoder's point subsample: the
same cloud, re-ordered, gives a different seeded 16,384-point draw. Needs the complete fused pack:
    r1 train pack --recipe config/train/nano.yaml --set pack.cloud=fused --set pack.frames=60 \
        --set pack.points=1000000 --data ~/.cache/r1/demo/dataset --detector r1_core/assets/r1-nano \
        --out /tmp/demo_pack_fusedall
Printed on the 2-core machine, 2026-11-24:
    as packed recall@.25 0.46 @.5 0.08 / permuted 1: 0.54 0.23 / permuted 2: 0.38 0.23 / permuted 3: 0.46 0.15
"""
import numpy as np, torch, warnings
warnings.filterwarnings("ignore")
torch.set_num_threads(2)
from r1_core.data.synthetic.demo import demo_scene
from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.checkpoint import load_checkpoint
from training.data import TrainingPack
model, _ = load_checkpoint("r1_core/assets/r1-nano", device="cpu"); model.eval()
scene = demo_scene()
gt = np.stack([o.box for o in scene.objects if o.label not in ("wall","floor","ceiling")]).astype(np.float64)
pts = TrainingPack("/tmp/demo_pack_fusedall").scene(scene.scene_id).points
rng = np.random.default_rng(0)
for trial in range(4):
    cloud = pts if trial == 0 else pts[rng.permutation(len(pts))]
    with torch.no_grad(): enc = model.encode_scene(cloud)
    best = box_iou_3d(gt, enc.boxes.astype(np.float64)).max(1)
    print(("as packed" if trial == 0 else f"permuted {trial}"), f"recall@.25 {np.mean(best>=.25):.2f} @.5 {np.mean(best>=.5):.2f}")
