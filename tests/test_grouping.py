"""CV groups by what leaks: one person's photos, one post's, one owner's and near copies never straddle folds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from selfiescope.core.settings import TrainPipeline
from selfiescope.pipelines.model.dataset import DatasetRow, table_grouping
from selfiescope.pipelines.model.leak_groups import PERSON_DISTANCE, leak_groups, person_clusters
from selfiescope.pipelines.model.train import cv_splits

DIMS = 128


def far_hashes(n: int, seed: int) -> list[str]:
    """pHashes far apart (random 64-bit values: ~32 bits differ), as dedup would leave them."""
    rng = np.random.default_rng(seed)
    return [f"{int(v):016x}" for v in rng.integers(0, 2**63, n, dtype=np.uint64)]


def people(n_people: int, per_person: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of ``n_people`` people: centres ~1.4 apart (unit vectors in 128-d), each
    photo within ~0.2 of its person's centre; returns (descriptors, person of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, DIMS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = np.repeat(np.arange(n_people), per_person)
    noise = rng.normal(size=(len(person), DIMS))
    noise *= 0.2 / np.linalg.norm(noise, axis=1, keepdims=True)
    return centres[person] + noise, person


def rows_for(n: int, posts: list[str | None] | None = None, owners: list[str | None] | None = None,
             hashes: list[str] | None = None) -> list[DatasetRow]:
    hashes = hashes or far_hashes(n, 1)
    return [DatasetRow(f"h{i}", None, "selfie", "#t", ".", None, 0.2, 1, hashes[i],
                       post=(posts or [None] * n)[i], owner=(owners or [None] * n)[i]) for i in range(n)]


def straddles(splits, key: np.ndarray) -> bool:
    """Whether any value of ``key`` has rows both in a fold's training and test sides."""
    return any(set(key[train]) & set(key[test]) for train, test in splits)


def test_person_clusters_find_the_people():
    descriptors, person = people(12, 6)
    ids = person_clusters(descriptors, PERSON_DISTANCE)
    assert len(np.unique(ids)) == 12
    for p in range(12):  # one cluster per person, exactly
        assert len(np.unique(ids[person == p])) == 1


def test_a_row_without_a_face_is_its_own_group():
    descriptors, _ = people(3, 2)
    descriptors[[0, 3]] = np.nan
    ids = person_clusters(descriptors)
    assert len(np.unique(ids)) == 5 and ids[0] != ids[1] and ids[3] != ids[2]


def test_same_person_never_straddles_folds_through_the_feature_table():
    """The feature table's groups (as train uses them): photos of one person, with pHashes
    dedup would keep (far apart), labelled both ways, stay on one side of every split."""
    n_people, per = 16, 6
    descriptors, person = people(n_people, per)
    n = len(person)
    X = np.column_stack([np.random.default_rng(2).normal(size=(n, 3)), descriptors])
    columns = ["geometry.a", "geometry.b", "geometry.c", *[f"embedding.e{i:03d}" for i in range(DIMS)]]
    y = (np.arange(n) % 2).astype(np.int64)  # each person has photos of both labels
    grouping = table_grouping(X, columns, rows_for(n), TrainPipeline(kind="train"))
    assert grouping.summary["person"]["groups"] == n_people and grouping.summary["largest"] == per
    splits = cv_splits(y, grouping.ids, 5, seed=0)
    assert not straddles(splits, person)


def test_without_descriptors_the_summary_says_person_was_not_grouped():
    grouping = table_grouping(np.zeros((4, 1)), ["geometry.a"], rows_for(4), TrainPipeline(kind="train"))
    assert grouping.summary["person"]["descriptor"] is None and "not grouped by person" in grouping.summary["person"]["note"]
    assert grouping.summary["groups"] == 4


def test_near_copies_looser_than_dedup_share_a_group():
    base = 0x0F0F_0F0F_0F0F_0F0F
    hashes = [f"{base:016x}", f"{base ^ 0xFFF:016x}", f"{base ^ ((1 << 40) - 1):016x}"]  # 12 bits, 40 bits apart
    grouping = leak_groups(descriptors=None, posts=[None] * 3, owners=[None] * 3, phashes=hashes, phash_distance=16)
    assert grouping.ids[0] == grouping.ids[1] != grouping.ids[2]


keys = st.lists(st.one_of(st.none(), st.sampled_from("abcdef")), min_size=12, max_size=40)


@hsettings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_shared_post_owner_or_person_means_one_group(data):
    """Invariant: two rows that share a post, an owner or a person share a group, and grouped
    folds never put them on both sides."""
    posts = data.draw(keys)
    n = len(posts)
    owners = data.draw(st.lists(st.one_of(st.none(), st.sampled_from("uvwxyz")), min_size=n, max_size=n))
    person = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    descriptors, _ = people(6, 1, seed=3)
    descriptors = descriptors[person]
    grouping = leak_groups(descriptors=descriptors, posts=posts, owners=owners, phashes=far_hashes(n, 4),
                           phash_distance=16)
    ids = grouping.ids
    for i in range(n):
        for j in range(i + 1, n):
            if (posts[i] and posts[i] == posts[j]) or (owners[i] and owners[i] == owners[j]) or person[i] == person[j]:
                assert ids[i] == ids[j]
    assert grouping.summary["groups"] == len(np.unique(ids))
    y = np.array([i % 2 for i in range(n)])
    if min(len(np.unique(ids[y == c])) for c in (0, 1)) >= 2:
        assert not straddles(cv_splits(y, ids, 3, seed=0), ids)


@pytest.mark.timeout(600)
def test_real_faces_cluster_by_person(faces_dir):
    """On ../shared/faces: the Caltech set has several photos per person; some cluster must
    hold more than one photo, and no cluster may swallow the whole set."""
    dlib = pytest.importorskip("dlib")
    import cv2

    from selfiescope.plugins.landmarks import model_file

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    recogniser = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
    descriptors = []
    for path in sorted(faces_dir.glob("portrait/caltech_*.jpg"))[:30]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        found = detector(image, 1)
        if found:
            face = max(found, key=lambda r: r.area())
            descriptors.append(np.array(recogniser.compute_face_descriptor(image, predictor(image, face))))
    assert len(descriptors) >= 20
    ids = person_clusters(np.array(descriptors))
    counts = np.unique(ids, return_counts=True)[1]
    assert counts.max() > 1 and counts.max() < len(descriptors)


def test_near_copies_of_one_photo_leave_the_loosest_link_out_and_say_so():
    """Every photo within pHash 16 of the others (renderings of one photo): grouped by
    everything, each label is one group and CV is impossible; the near-duplicate link is
    left out, and the summary and the warning say so."""
    from selfiescope.pipelines.model.leak_groups import fallback_warning

    base = 0x0123_4567_89AB_CDEF
    hashes = [f"{base ^ (1 << i):016x}" for i in range(12)]
    y = np.array([i % 2 for i in range(12)])
    grouping = leak_groups(descriptors=None, posts=[None] * 12, owners=[None] * 12, phashes=hashes,
                           phash_distance=16, labels=y)
    assert grouping.summary["not_grouped_by"] == ["near_duplicate"] and grouping.summary["groups"] == 12
    assert "near copy" in fallback_warning(grouping.summary)
    kept = leak_groups(descriptors=None, posts=[f"p{i // 2}" for i in range(12)], owners=[None] * 12,
                       phashes=far_hashes(12, 7), phash_distance=16, labels=y)
    assert kept.summary["not_grouped_by"] == [] and fallback_warning(kept.summary) is None
    assert kept.summary["groups"] == 6  # one per post: the posts hold both labels, and still split


def test_a_pipeline_without_the_embedding_is_still_grouped_by_person(faces_dir, tmp_path):
    """features = ["geometry"]: the descriptor is computed for the groups alone (cached, never a
    model column), and gives the same person clusters as the embedding group would; with
    group_by_person = false the summary names that setting."""
    from selfiescope.core.app import App
    from selfiescope.pipelines.model.dataset import build_feature_table
    from train_helpers import build_dataset, train_settings

    photos = sorted(faces_dir.glob("portrait/caltech_*.jpg"))[:24]
    root = tmp_path / "data"
    build_dataset(root, {"selfie": photos[0::2], "portrait": photos[1::2]})

    def table(features, **extra):
        settings = train_settings(root, tmp_path / "m", features, **extra)
        return build_feature_table(App.create(settings), settings.pipelines["t"])

    geometry = table(["geometry"])
    assert geometry.columns == [c for c in geometry.columns if c.startswith("geometry.")]
    person = geometry.grouping["person"]
    assert person["descriptor"] and person["rows_covered"] >= 20 and "person" in geometry.grouping["by"]
    embedded = table(["embedding"])
    assert np.array_equal(np.unique(geometry.groups, return_inverse=True)[1],
                          np.unique(embedded.groups, return_inverse=True)[1])  # the same people, the same groups
    assert person["groups"] < person["rows_covered"]  # Caltech sitters have several photos each
    again = table(["geometry"])
    assert again.computed == 0 and np.array_equal(again.groups, geometry.groups)  # the descriptors were cached
    off = table(["geometry"], group_by_person=False).grouping
    assert "person" not in off["by"] and "group_by_person = false" in off["person"]["note"]
