"""Edit-friendly DDPM inversion for easyinv-bench: ``pip install`` this package, then ``easyinv-bench
method=edit_friendly``. Nothing is imported here: the harness finds the config package (``conf``) at every start,
and imports ``method`` only when the method is chosen."""
