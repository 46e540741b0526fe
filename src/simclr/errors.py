"""The one error type for what a user can fix: bad params, a bad layout, a missing or unreadable file.

The CLI prints such an error as one `error: <file or key>: <problem>` line per problem and exits 1;
anything else (a CUDA out-of-memory, a shape mismatch, a bug) keeps its traceback.
"""


class UserError(ValueError):
    """An expected error; str() is one line per problem, each naming the file or key."""
