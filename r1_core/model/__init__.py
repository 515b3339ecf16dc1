"""r1_core.model: the 3D vision-language model (point encoder, projector, backbones, answer format, generation)."""
