"""A plain-Python Philox4x32-10 and the documented counter mapping (csrc/common/fill_sampler.h),
written independently of the C++ so the tests can check which words land in which element."""

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_10(counter, key):
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return c0, c1, c2, c3


def element_words(seed, stream, index, per_group):
    """The Philox words of logical element `index`: group = index // per_group."""
    group = index // per_group
    words = philox4x32_10(
        (group & MASK, group >> 32, stream & MASK, stream >> 32), (seed & MASK, seed >> 32)
    )
    return words, index % per_group
