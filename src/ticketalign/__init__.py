"""ticketalign: aligning lottery-ticket masks across random initializations by weight symmetry.

The library behind the Snakemake pipeline. It knows nothing about Snakemake: every module
computes, the scripts in ``workflow/scripts`` only parse arguments, call it and save.
"""

__version__ = "0.1.0"
