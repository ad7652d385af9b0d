"""Networks and the training loop: timm backbones and gibench's own small nets, the X-DNN homogeneity check,
augmentation, the training config and plugin specs, and ``fit``."""

__all__: list[str] = []  # a namespace of modules; import from them
