"""Graph transforms that make a network cheaper to run without changing what it computes: batch norms folded into
the layer before them for scoring, ReLUs that may overwrite their input for training."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from n2n.errors import ModelError
from n2n.surgery._fx import is_layer, module_of, trace
from n2n.surgery.remove import call_sites

log = logging.getLogger(__name__)


#: modules whose backward reads their input and weights but not their output, so a ReLU after them may overwrite it
_OUTPUT_NOT_SAVED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextlib.contextmanager
def relus_in_place(model: nn.Module) -> Iterator[int]:
    """Within the block, the ``nn.ReLU`` modules of ``model`` (a torch.fx ``GraphModule``, as every student is) that
    may safely overwrite their input do so (``inplace=True``); afterwards every flag is as it was. Yields how many.

    A ReLU qualifies when it is called at one place only, and its input is the output of a convolution, linear layer
    or batch norm (whose backward does not read it) that nothing else reads. The usual conv-BN-ReLU block then
    skips one allocation and one write of its largest activation (measured in docs/benchmarks.md, "Compute-path
    choices"). Other models, and ReLUs that feed a skip connection, a second ReLU or a shared module, are left
    alone.
    """
    chosen: list[nn.ReLU] = []
    if isinstance(model, fx.GraphModule):
        sites = call_sites(model)
        for node in model.graph.nodes:
            relu = module_of(model, node)
            if not isinstance(relu, nn.ReLU) or relu.inplace or len(sites[str(node.target)]) != 1 or not node.args:
                continue
            source = node.args[0]
            if isinstance(source, fx.Node) and len(source.users) == 1:
                if isinstance(module_of(model, source), _OUTPUT_NOT_SAVED):
                    chosen.append(relu)
    for relu in chosen:
        relu.inplace = True
    try:
        yield len(chosen)
    finally:
        for relu in chosen:
            relu.inplace = False


def folded(model: nn.Module) -> nn.Module | None:
    """An eval-mode copy of ``model`` with every batch norm folded into the convolution or linear layer it follows
    (``torch.fx.experimental.optimization.fuse``), or None when ``model`` cannot be traced or applies one convolution
    or linear layer at two places (its single copy could only be folded with one of the batch norms after it; a
    shared activation, such as a ResNet block's one ``ReLU``, is fine).

    Scoring the validation split with the folded copy skips the normalisation pass over every activation (see
    docs/benchmarks.md, "Compute-path choices"). Logits move by about 1e-6, so folding is kept to scoring (argmax),
    and the teacher logits that students learn from are computed unfolded.
    """
    try:
        traced = trace(model).eval()
    except ModelError as err:  # score the model as it is
        log.debug("scoring without folding batch norms: %s", err)
        return None
    if any(len(nodes) > 1 and is_layer(module_of(traced, nodes[0])) for nodes in call_sites(traced).values()):
        return None
    return fuse(traced, inplace=True, no_trace=True)
