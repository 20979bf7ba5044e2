"""A regular package, so `tests.helpers` is this folder's wherever another `tests` package is importable:
`import IPython` 7.x (Colab ships 7.34) appends `IPython/extensions` to sys.path, and the `tests/` package
there would win over this folder as a namespace package (.ci/colab-parity hit it)."""
