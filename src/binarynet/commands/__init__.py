"""Sub-commands of the ``binarynet`` CLI (see ``binarynet.cli``)."""
