"""Running a suite: its options, one job (train then evaluate), the suite loop, the checks before training
(preflight), the Ray executor, the terminal view and the cost estimate."""

__all__: list[str] = []  # a namespace of modules; import from them
