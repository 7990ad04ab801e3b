"""What the book shows: figures in one style (``advlib.viz.figures``), sliders that work live and in the static
book (``advlib.viz.sliders``), and tables rendered as tables, ours beside the paper's (``advlib.viz.tables``).
"""

from .figures import (
    STYLE,
    plot_confusion_matrix,
    plot_curves,
    plot_probabilities,
    show_adversarial,
    show_feature_maps,
    show_images,
    show_kernels,
    show_predictions,
    show_weights,
    use_style,
)
from .sliders import SLIDER_ENV, SLIDER_MODES, epsilon_explorer, parameter_slider, slider_mode
from .tables import Table, paper_table, rate, table

__all__ = ["STYLE", "SLIDER_ENV", "SLIDER_MODES", "Table", "epsilon_explorer", "paper_table", "parameter_slider",
           "plot_confusion_matrix", "plot_curves", "plot_probabilities", "rate", "show_adversarial",
           "show_feature_maps", "show_images", "show_kernels", "show_predictions", "show_weights", "slider_mode",
           "table", "use_style"]
