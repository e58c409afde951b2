"""Depth families for [`contdepth.depth_sweep`][]: callables `N -> model`.

Any callable `N -> model` is a depth family (e.g. `lambda n: MyNet(n)`); these are the
built-in ones, small frozen modules so that equal arguments give equal models (and a
repeated sweep compiles nothing). Optional capabilities the sweep discovers: `limit`,
`bounds`, `lipschitz`, `traced_depth`; see `contdepth._sweep.families`.
`refined(net)` sweeps one trained untied ResNet refined in depth against its ODE.
"""

from ._sweep.families import (
    euler as euler,
    highway as highway,
    momentum as momentum,
    plain as plain,
    random_branches as random_branches,
    reversible as reversible,
    scaled_residual as scaled_residual,
    unscaled as unscaled,
    untied as untied,
)
from ._sweep.refined import refined as refined
