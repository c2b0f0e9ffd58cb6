"""Applications on top of the library: the ``chatkit-mongo`` CLI (with its one set of
connection options), the demo ChatKit server and its embedded backend, the benchmark."""
