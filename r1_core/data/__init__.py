"""r1_core.data: datasets in the real ScanNet / 3D-language formats, a synthetic ScanNet-like
world that writes the same formats, RGB-D bags, and the Scene-30K CoT engine.

    r1 data synth --out data/synth --scenes 100 --val-scenes 20 --seed 0   # a training set
    r1 data bag --demo --out demo_bag                                       # RGB-D walk-through bag
    r1 data cot --dataset data/synth --split train                          # Scene-30K CoT
    r1 data prepare-scannet --scans /data/ScanNet/scans --out data/real/scannet/scannet_data

    from r1_core.data.tasks import load_task_samples
    samples = load_task_samples("data/synth", "train")     # list[TaskSample], real or synthetic

On-disk layout of a dataset root (the released datasets' own layouts, so real data drops in):

    <root>/scannet/scannet_data/<scene>_aligned_vert.npy   (N, 6|9) xyz rgb [normal], map frame
                               <scene>_ins_label.npy       (N,) object_id + 1, 0 = none
                               <scene>_sem_label.npy       (N,) NYU40 id
                               <scene>_aligned_bbox.npy    (K, 8) cx cy cz dx dy dz nyu40 object_id
    <root>/scannet/meta_data/scannetv2_{train,val}.txt     scene ids, one per line
    <root>/ScanRefer/ScanRefer_filtered_{split}.json (+ .txt scene list)
    <root>/Nr3D/nr3d.csv (ReferIt3D columns), nr3d_{split}.json (LL3DA, ScanRefer fields) (+ .txt)
    <root>/ScanQA/ScanQA_v1.0_{split}.json
    <root>/SQA3D/balanced/v1_balanced_questions_{split}_scannetv2.json
                          v1_balanced_sqa_annotations_{split}_scannetv2.json
    <root>/3D_LLM/3d_llm_embodied_dialogue_filtered_{split}.json
                  3d_llm_embodied_planning_filtered_{split}.json
    <root>/Scene-30K/scene30k_{split}.jsonl  (+ scene30k_{split}_rejected.jsonl with reasons)
    <root>/synthetic/<scene>.json            synthetic ground truth (parts, colours, supports)

Modules: scene (Scene, SceneObject, ScanNet arrays), classes (NYU40 / ScanNet-18 / ScanRefer maps),
formats (readers/writers), tasks (TaskSample, DatasetLayout), graph (relations, referring
expressions), rgbd (frames, intrinsics), bags (ROS 2 bags), cot (Scene-30K engine),
scannet_raw (raw scan preparation), synthetic.{world,render,language,dataset,demo}.
"""
