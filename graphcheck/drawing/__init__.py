"""Drawing the flagged paths: a graphviz picture of each finding's neighbourhood, the rest of the model collapsed.

The drawing is planned in three steps, then handed to graphviz's ``dot``:

1. *Pick* the nodes drawn one by one: the loss, the outputs, the ops that cut a
   gradient (and the ``no_grad`` regions), the ends of dead branches, each finding's
   own nodes for the families that name few nodes (GC2xx-GC5xx), and their immediate
   neighbours on the flagged path. Small graphs are drawn whole.
2. *Collapse* every other node into the box of its module (the ``nn.Module``
   hierarchy from the node attribute ``module``), expanded ``depth`` levels below the
   modules that hold the flagged parameters; healthy siblings stay single boxes, and
   runs of repeated blocks (``layer.0-11``) that hold nothing picked become one box.
3. *Contract* the graph onto those elements (networkx's quotient): an edge that carries
   no gradient is drawn dashed grey, which is exactly where a gradient is cut.

A ``dot`` run is bounded by a timeout and PNGs by a size, since real models otherwise
take minutes; when ``dot`` is missing, the ``.dot`` source is written with a hint on
how to install graphviz.
"""

from graphcheck.drawing.output import FORMATS, Rendered, output_paths, render, render_one, render_results
from graphcheck.drawing.palette import FAMILIES, OTHER_FAMILY, Family, family_of
from graphcheck.drawing.plan import Plan, plan
from graphcheck.drawing.style import dot_source, to_digraph

__all__ = ["FAMILIES", "FORMATS", "OTHER_FAMILY", "Family", "Plan", "Rendered", "dot_source", "family_of", "output_paths",
           "plan", "render", "render_one", "render_results", "to_digraph"]
