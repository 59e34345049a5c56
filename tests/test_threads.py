"""The thread default: one intra-op thread per physical core, read from sysfs topology."""

from edge_runtime.ort_session import default_threads, physical_cores


def _fake_sysfs(root, layout):
    """layout: {cpu: (package, core)}."""
    for cpu, (package, core) in layout.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthread_siblings_count_once(tmp_path):
    sysfs = _fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    assert physical_cores([0, 1, 2, 3], sysfs) == 2
    assert physical_cores([0, 2], sysfs) == 1  # pinned to one core's two siblings


def test_cores_of_two_packages_are_distinct(tmp_path):
    sysfs = _fake_sysfs(tmp_path, {0: (0, 0), 1: (1, 0)})
    assert physical_cores([0, 1], sysfs) == 2


def test_two_vcpus_without_smt_get_two_threads(tmp_path):
    sysfs = _fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1)})
    assert physical_cores([0, 1], sysfs) == 2


def test_missing_topology_falls_back_to_logical_count(tmp_path):
    assert physical_cores([0, 1], tmp_path) == 2
    assert physical_cores(list(range(8)), tmp_path) == 4


def test_default_is_at_least_one():
    assert default_threads() >= 1
