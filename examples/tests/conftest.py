"""``train.py`` is a script: make its folder importable for the tests.

Several tests train the same model twice (straight and resumed), so each test process
keeps a persistent XLA compilation cache (in a temporary folder, unless the run has one:
nox's test sessions share ``.nox/xla-cache``): the second run loads the executables the
first one compiled.
"""

import sys
import tempfile
from pathlib import Path

import jax

EXAMPLES = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLES))

if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="vit-flax-examples-xla-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
