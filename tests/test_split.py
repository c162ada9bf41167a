import numpy as np

from lgmrec.split import protocol_split


def test_split_follows_the_protocol_exactly():
    counts = {0: 5, 1: 9, 2: 10, 3: 23, 4: 37}
    users = np.repeat(list(counts), list(counts.values()))
    labels = protocol_split(np.random.default_rng(0).permutation(users), np.random.default_rng(1))
    shuffled_users = np.random.default_rng(0).permutation(users)
    for user, n in counts.items():
        mine = labels[shuffled_users == user]
        held = 2 if n < 10 else int(np.floor(0.2 * n))
        n_valid = 1 if n < 10 else held // 2
        assert (mine == 1).sum() == n_valid
        assert (mine == 2).sum() == held - n_valid
        assert (mine == 0).sum() == n - held


def test_split_is_seeded_and_random():
    users = np.repeat(np.arange(50), 12)
    a = protocol_split(users, np.random.default_rng(7))
    b = protocol_split(users, np.random.default_rng(7))
    c = protocol_split(users, np.random.default_rng(8))
    assert (a == b).all() and (a != c).any()
