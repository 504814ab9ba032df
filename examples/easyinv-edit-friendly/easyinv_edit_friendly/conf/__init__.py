"""The plugin's config groups (``method/edit_friendly.yaml``), found through the ``easyinv.configs`` entry point."""
