"""Built-in regularizers, one module each, registered under the ``gibench.regularizers`` entry-point group."""
