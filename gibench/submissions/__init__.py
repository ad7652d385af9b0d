"""Submissions and verification: provenance, the submission schema, packaging, validation, artifacts, re-keying,
and re-training a sample of a submission's jobs (``gibench verify``)."""

__all__: list[str] = []  # a namespace of modules; import from them
