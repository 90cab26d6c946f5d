"""nluforge."""

import logging as _logging

# peft imports bitsandbytes and torchao when they are installed (the `optim` extra). On a CPU machine
# both log warnings at import time about GPU kernels they cannot load (and torch warns about an enum
# that torchao registers), on every command. None of it concerns a kernel nluforge uses, so those
# three loggers only pass errors.
for _name in ("torchao", "bitsandbytes.backends.cpu.ops", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
