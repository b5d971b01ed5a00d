"""firstlayer-zoo: what the first conv layer of every checkpoint learned (the workflow's package).

`firstlayer_zoo.analyse(model)` profiles one model in a notebook (firstlayer_zoo.notebook). Importing the
package stays cheap and torch-free (the Snakefile imports it at start-up): `analyse` loads on first use.
"""


def __getattr__(name: str):
    if name in ("analyse", "Result"):
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'firstlayer_zoo' has no attribute {name!r}")
