"""One module per step of the pipeline (what a Snakemake rule or DVC stage runs) and per tool command. Each module's
`run(...)` is the one function the command line, the tests and the notebooks call."""
