"""Subjects chosen the way labs do (issue 15): HCP's behavioural CSV with ``--where`` filters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_ENV, fast_put, plan_doc

from hcpsync.errors import SelectionError, UsageError
from hcpsync.subjects import Condition, read_subjects

# shaped like unrestricted_*.csv: a header, quoted values (one with a comma and a quote), empty cells
HCP_CSV = '''Subject,Release,Acquisition,Gender,Age,3T_Full_MR_Compl,PMAT24_A_CR,Notes
100206,S900,Q11,M,26-30,TRUE,20,
"100307","Q1","Q01","F","26-30","TRUE","24","said ""fine"", left early"
100408,Q3,Q03,M,31-35,TRUE,,
101107,S500,Q06,M,22-25,FALSE,17,
101309,S500,Q06,F,26-30,TRUE,23,
'''


@pytest.fixture
def hcp_csv(tmp_path: Path) -> Path:
    path = tmp_path / "unrestricted_test.csv"
    path.write_text(HCP_CSV, encoding="utf-8")
    return path


def where(*conds: str) -> list[Condition]:
    return [Condition.parse(c) for c in conds]


def test_where_filters_rows_all_conditions_holding(hcp_csv: Path) -> None:
    got = read_subjects(str(hcp_csv), where=where("Gender=F"))
    assert got.subjects == ["100307", "101309"] and (got.rows, got.matched) == (5, 2)
    assert read_subjects(str(hcp_csv), where=where("Gender=M", "3T_Full_MR_Compl=TRUE")).subjects == ["100206", "100408"]
    assert read_subjects(str(hcp_csv), where=where("Release!=S500")).subjects == ["100206", "100307", "100408"]
    # numbers: an empty cell is no number and matches neither < nor >
    assert read_subjects(str(hcp_csv), where=where("PMAT24_A_CR>19")).subjects == ["100206", "100307", "101309"]
    assert read_subjects(str(hcp_csv), where=where("PMAT24_A_CR<20")).subjects == ["101107"]
    assert read_subjects(str(hcp_csv), where=where("Notes=")).subjects == ["100206", "100408", "101107", "101309"]
    assert read_subjects(str(hcp_csv)).subjects == ["100206", "100307", "100408", "101107", "101309"]
    # another column holds the IDs
    assert read_subjects(str(hcp_csv), column="Acquisition", where=where("Gender=F")).subjects == ["Q01", "Q06"]


def test_unknown_column_lists_the_columns_and_an_empty_result_is_an_error(hcp_csv: Path) -> None:
    with pytest.raises(UsageError, match=r"no column 'Sex'; its columns: Subject, Release, .*Gender"):
        read_subjects(str(hcp_csv), where=where("Sex=F"))
    with pytest.raises(UsageError, match="no column 'ID'"):
        read_subjects(str(hcp_csv), column="ID")
    with pytest.raises(SelectionError, match=r"no row of .* \(5 rows\) gives a subject with --where Gender=X"):
        read_subjects(str(hcp_csv), where=where("Gender=X"))
    for bad in ("Gender", "Age<young", "=F"):
        with pytest.raises(UsageError, match="--where"):
            Condition.parse(bad)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **FAKE_ENV})


def test_plan_with_a_csv_selection(hcp_csv: Path, moto_url: str, bucket: str) -> None:
    fast_put(bucket, {f"HCP_1200/{s}/T1w/a.nii": s.encode() for s in ("100206", "100307", "100408", "101107", "101309")})
    sel = ("--endpoint-url", moto_url, "--bucket", bucket, "--subjects-file", str(hcp_csv))
    done = run("plan", *sel, "--where", "Gender=F", "--where", "3T_Full_MR_Compl=TRUE", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(o["path"] for o in plan_doc(done.stdout)["objects"]) == ["100307/T1w/a.nii", "101309/T1w/a.nii"]
    assert "unrestricted_test.csv: 2 of 5 rows match --where Gender=F --where 3T_Full_MR_Compl=TRUE" in done.stderr
    for extra, says in ((("--where", "Sex=F"), "no column 'Sex'; its columns: Subject, Release"),
                        (("--where", "Gender=X"), "no row of"),
                        (("--where", "Gender"), "expected COLUMN=VALUE")):
        bad = run("plan", *sel, *extra)
        assert bad.returncode == 2 and says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    alone = run("plan", "--endpoint-url", moto_url, "--bucket", bucket, "--subject", "100307", "--where", "Gender=F")
    assert alone.returncode == 2 and "--where select rows of --subjects-file" in alone.stderr
