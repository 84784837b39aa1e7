"""Hidden-unit permutations: the spec of a network's symmetry and the matchers that find one."""

from ticketalign.permutation.spec import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    permute_model,
    random_permutation,
)

__all__ = [
    "Permutation",
    "PermutationSpec",
    "apply_permutation",
    "compose_permutations",
    "identity_permutation",
    "invert_permutation",
    "permute_model",
    "random_permutation",
]
