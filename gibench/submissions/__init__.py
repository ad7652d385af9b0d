"""Submissions and verification: provenance, the submission schema, packaging, validation, artifacts, re-keying,
re-training a sample of a submission's jobs (``gibench verify``), the trained models (export, load, the models a
submission references) and re-evaluating the submitted ones (``gibench verify --reevaluate``)."""

__all__: list[str] = []  # a namespace of modules; import from them
