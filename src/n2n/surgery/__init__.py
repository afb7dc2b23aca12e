"""Surgery on any torch.fx-traceable network: what can change, removing layers, shrinking them."""

from n2n.surgery.analysis import FEATURE_DIM, HEAD, Analysis, LayerInfo, analyze, layer_features, unmatched_patterns
from n2n.surgery.count import count_calls, count_macs, count_params, forward_counts
from n2n.surgery.edits import Edits, apply_edits
from n2n.surgery.remove import remove_layers
from n2n.surgery.repair import Bypass, ChannelPad
from n2n.surgery.shrink import shrink_layers

__all__ = [
    "FEATURE_DIM",
    "HEAD",
    "Analysis",
    "Bypass",
    "ChannelPad",
    "Edits",
    "LayerInfo",
    "analyze",
    "unmatched_patterns",
    "apply_edits",
    "count_macs",
    "count_params",
    "count_calls",
    "forward_counts",
    "layer_features",
    "remove_layers",
    "shrink_layers",
]
