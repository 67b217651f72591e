"""Per-frame conversational states, as in the corpus' ``state.npy``."""
IDLE, LISTEN, SPEAK, CROSSTALK = 0, 1, 2, 3
STATE_NAMES = {IDLE: "idle", LISTEN: "listen", SPEAK: "speak", CROSSTALK: "crosstalk"}
NUM_STATES = 4


def partner_state(state):
    """The partner's state for the same frame (listen <-> speak; idle and crosstalk coincide)."""
    return {IDLE: IDLE, LISTEN: SPEAK, SPEAK: LISTEN, CROSSTALK: CROSSTALK}[int(state)]
