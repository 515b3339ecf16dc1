"""Scene geometry, ROS-free: boxes, point ops, RGB-D back-projection and the fusion map.

    from r1_core.geometry.boxes import box_iou_3d, points_in_boxes
    from r1_core.geometry.points import furthest_point_sample, ball_query, group_points
    from r1_core.geometry.rgbd import backproject, intrinsics_from_camera_info
    from r1_core.geometry.fusion import FusionConfig, FusionMap

Every op has a torch reference (used on CPU) and, for the hot ones, a CUDA kernel in
`r1_core.cuda` used for CUDA tensors; `r1_core.geometry.dispatch` decides which runs.
Conventions (frames, box format, cloud layout): docs/conventions.md.
"""
