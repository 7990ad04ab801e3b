"""Certified robustness: lower bounds on the margins f_y(x') - f_j(x') over every x' in the Linf ball.

- :func:`dual_bounds`: Wong and Kolter's dual network (2018, Thm. 1 / Alg. 1), exact layer bounds or
  their random-projection estimate (Wong, Schmidt, Metzen and Kolter 2018, Sec. 3.2).
- :func:`ibp_bounds`, :func:`ibp_margin_bounds`: interval bound propagation (Gowal et al. 2018, Eq. (6)).
- :func:`crown_ibp_bounds`: CROWN-IBP (Zhang et al. 2020, Sec. 3).
- :func:`exact_margins`: the exact smallest margins of a small ReLU network, by mixed-integer linear programming
  (Tjeng, Xiao and Tedrake 2019), between the bounds above and what attacks find; :func:`unstable_relus`, the
  units whose bounds cross zero (its binaries).
- :func:`margin_bounds` (any of the three), :func:`robust_loss` (Wong and Kolter's Thm. 2) and
  :func:`certified_accuracy` over a dataset.

The dual network and CROWN share one linear-relaxation backward pass (``advlib.certify.backward``); they differ in
the lower slope of a crossing ReLU. Supported models: ``nn.Sequential`` of ``nn.Linear``, ``nn.Conv2d``,
``nn.ReLU``, ``nn.Flatten`` and :class:`advlib.models.Normalize` (``advlib.certify.network``).
"""

from .crown import crown_ibp_bounds
from .dual import dual_bounds
from .exact import ExactMargins, exact_margins, unstable_relus
from .ibp import ibp_bounds, ibp_margin_bounds
from .losses import METHODS, certified, certified_accuracy, margin_bounds, robust_loss

__all__ = ["METHODS", "ExactMargins", "certified", "certified_accuracy", "crown_ibp_bounds", "dual_bounds",
           "exact_margins", "ibp_bounds", "ibp_margin_bounds", "margin_bounds", "robust_loss",
           "unstable_relus"]
