"""Built-in evaluators, one module each, registered under the ``gibench.evaluators`` entry-point group."""
