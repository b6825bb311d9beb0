"""The shell side of accounts and tokens: `inferd accounts ...`, `inferd tokens create --account`,
`inferd usage`, run against a real SQLite file."""

import asyncio
import re

from typer.testing import CliRunner

from inferd.accounts.db import Database
from inferd.accounts.tokens import TokenStore
from inferd.cli import app

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def field(output: str, name: str) -> str:
    return re.search(rf"^{name}:\s+(\S+)$", output, re.MULTILINE).group(1)


def verify(data_dir, secret):
    async def check():
        db = Database(f"sqlite:///{data_dir}/inferd.db")
        try:
            return await TokenStore(db).verify(secret)
        finally:
            await db.close()
    return asyncio.run(check())


def test_accounts_and_their_tokens_from_the_shell(tmp_path):
    where = ("--data-dir", str(tmp_path))
    made = run("accounts", "create", "team-x", "--rate-limit", "5", *where)
    account, first = field(made, "account"), field(made, "token")
    assert verify(tmp_path, first).account_id == account
    extra = run("tokens", "create", "ci", "--account", account, *where)
    assert field(extra, "account") == account and verify(tmp_path, field(extra, "token")).rate_limit == 5
    assert field(run("tokens", "create", "ops", "--admin", *where), "account") == "acc_admin"
    assert field(run("tokens", "create", "plain", *where), "account") == "acc_default"
    listed = run("accounts", "list", *where)
    assert re.search(rf"^{account}\s+team-x\s+2\s+5\s", listed, re.MULTILINE)
    assert "acc_admin" in listed and "(admin)" in listed
    assert run("accounts", "disable", account, *where).strip() == f"disabled {account}"
    assert verify(tmp_path, first).account_disabled
    run("accounts", "disable", account, "--enable", *where)
    assert not verify(tmp_path, first).account_disabled
    tokens = run("tokens", "list", *where)
    assert tokens.count(account) == 2 and "team-x" not in tokens


def test_mistakes_are_one_line_errors(tmp_path):
    where = ("--data-dir", str(tmp_path))
    result = runner.invoke(app, ["tokens", "create", "x", "--account", "acc_nope", *where])
    assert result.exit_code == 1 and "No account 'acc_nope'" in result.output and "Traceback" not in result.output
    run("tokens", "create", "ops", "--admin", *where)
    result = runner.invoke(app, ["accounts", "disable", "acc_admin", *where])
    assert result.exit_code == 1 and "cannot be disabled" in result.output
    result = runner.invoke(app, ["tokens", "create", "x", "--admin", "--account", "acc_default", *where])
    assert result.exit_code == 2


def test_usage_prints_the_bill(tmp_path):
    from datetime import UTC, datetime

    from inferd.accounts.usage import UsageRecorder, UsageRow

    async def record():
        db = Database(f"sqlite:///{tmp_path}/inferd.db")
        await db.migrate()
        recorder = UsageRecorder(db)
        for i in range(3):
            recorder.record(UsageRow(request_id=f"r{i}", token_id="tok_1", account_id="acc_1", model="org/m",
                                     version="1", task="embeddings", status="succeeded", pricing_type="input_tokens",
                                     input_tokens=10, cost_nano_usd=123_456_789))
        await recorder.flush()
        await db.close()

    asyncio.run(record())
    out = run("usage", "--data-dir", str(tmp_path))
    assert datetime.now(UTC).strftime("%Y.%m") in out
    assert re.search(r"org/m\s+input_tokens\s+3\s+30\s+0\.370370367\s+37$", out, re.MULTILINE), out
    assert re.search(r"total\s+0\.370370367\s+37$", out, re.MULTILINE)
    assert "org/m" not in run("usage", "--account", "acc_2", "--data-dir", str(tmp_path))
    result = runner.invoke(app, ["usage", "--from", "someday", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "YYYY.MM" in result.output
