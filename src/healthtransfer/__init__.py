"""healthtransfer: cross-domain health data analysis with transfer learning.

The flow (see DESIGN.md): ``data`` (sources, schemas, harmonisation, splits) -> ``shift`` ->
``methods`` -> ``selection`` -> ``evaluation`` -> ``reports`` -> ``bundle`` -> ``serve``.
Importing the package is cheap and changes no global state (skada and torch are imported only
by the methods that need them).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
