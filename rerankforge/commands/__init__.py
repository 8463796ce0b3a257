"""One module per command-line verb (see ``rerankforge.cli``)."""
