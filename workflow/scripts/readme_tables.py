#!/usr/bin/env python
"""Copy runs' table.md into README.md, between the markers named after each run.

Not a rule (the README is not a result): run it by hand after a run whose table the README shows,
    python workflow/scripts/readme_tables.py results/digits_mlp/table.md results/fashion_mnist_mlp/table.md
results/<name>/table.md goes between <!-- TABLE:<name>:BEGIN --> and <!-- TABLE:<name>:END -->.
"""

import argparse
from pathlib import Path

from ticketalign.report import insert_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", type=Path, help="results/<name>/table.md files")
    p.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[2] / "README.md")
    args = p.parse_args()
    text = args.readme.read_text()
    for table in args.tables:
        text = insert_table(text, table.parent.name, table.read_text())
    args.readme.write_text(text)


if __name__ == "__main__":
    main()
