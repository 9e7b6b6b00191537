"""The README walkthrough through a Python client generated from the served OpenAPI document
(openapi-python-client), used as a new user would: no `minPosition` anywhere, every
answer parsed into the generated models, every request sent to the other server than the
one before (no affinity).

Environment: GENERATED (the folder holding the generated package), BASES (two base URLs,
comma-separated, without /api/v1... as the document's paths carry it), PASSWORD,
CAROL_EMAIL (an arbiter), RUN (a suffix for the e-mail addresses). Prints
"python client: all steps passed" last. Run by tests/tests/e2e/clients.rs.
"""

import itertools
import os
import sys
import uuid

sys.path.insert(0, os.environ["GENERATED"])

from escrow_ledger_api_client import AuthenticatedClient, Client  # noqa: E402
from escrow_ledger_api_client.api.auth import login, register  # noqa: E402
from escrow_ledger_api_client.api.contracts import (  # noqa: E402
    create,
    deliver,
    fund,
    get_contract,
    release,
)
from escrow_ledger_api_client.api.disputes import list_, raise_, resolve  # noqa: E402
from escrow_ledger_api_client.api.wallets import (  # noqa: E402
    deposit,
    get_wallet,
    transactions,
    transfer,
    withdraw,
)
from escrow_ledger_api_client.models import (  # noqa: E402
    ContractView,
    CreateContractRequest,
    Credentials,
    DisputePage,
    DisputeView,
    LoginResponse,
    MoneyRequest,
    MoneyResponse,
    Problem,
    RaiseDisputeRequest,
    RegisteredUser,
    ResolveSplit,
    ResolveSplitOutcome,
    TransactionPage,
    TransferRequest,
    WalletView,
)

BASES = os.environ["BASES"].split(",")
PASSWORD = os.environ["PASSWORD"]
RUN = os.environ["RUN"]
servers = itertools.cycle(BASES)


def anonymous() -> Client:
    return Client(base_url=next(servers), raise_on_unexpected_status=True)


def as_user(token: str) -> AuthenticatedClient:
    """A client for the next server: every request goes to the other one than before."""
    return AuthenticatedClient(
        base_url=next(servers), token=token, raise_on_unexpected_status=True
    )


def parsed(response, model):
    """The answer, parsed into the generated model it must be."""
    assert isinstance(response.parsed, model), (
        f"HTTP {response.status_code}: expected {model.__name__}, got "
        f"{type(response.parsed).__name__}: {response.content!r}"
    )
    return response.parsed


def step(name):
    print(f"ok {name}", flush=True)


def sign_up(name):
    email = f"{name}-{RUN}@example.com"
    creds = Credentials(email=email, password=PASSWORD)
    parsed(register.sync_detailed(client=anonymous(), body=creds), RegisteredUser)
    return sign_in(email)


def sign_in(email):
    answer = login.sync_detailed(
        client=anonymous(), body=Credentials(email=email, password=PASSWORD)
    )
    session = parsed(answer, LoginResponse)
    return session.access_token, uuid.UUID(session.user.id)


def balance(token, user_id):
    return parsed(get_wallet.sync_detailed(user_id, client=as_user(token)), WalletView)


alice, alice_id = sign_up("alice")
bob, bob_id = sign_up("bob")
step("register and log in")

key = str(uuid.uuid4())
body = MoneyRequest(user_id=alice_id, amount="500.00", description="Initial deposit")
first = parsed(deposit.sync_detailed(client=as_user(alice), body=body, idempotency_key=key), MoneyResponse)
again = parsed(deposit.sync_detailed(client=as_user(alice), body=body, idempotency_key=key), MoneyResponse)
assert first.transaction.id == again.transaction.id, "a retried deposit is one deposit"
assert balance(alice, alice_id).balance == "500.00"
step("deposit, retried with its Idempotency-Key, read back")

sent = transfer.sync_detailed(
    client=as_user(alice),
    body=TransferRequest(to_user_id=bob_id, amount=125.25, description="Logo design"),
)
parsed(sent, MoneyResponse)
assert balance(alice, alice_id).balance == "374.75"
assert balance(bob, bob_id).balance == "125.25"
history = parsed(transactions.sync_detailed(alice_id, client=as_user(alice)), TransactionPage)
assert [t.type_ for t in history.items] == ["TRANSFER", "DEPOSIT"], history.items
step("transfer; balances and history on the other server")

parsed(withdraw.sync_detailed(client=as_user(bob), body=MoneyRequest(user_id=bob_id, amount="25")), MoneyResponse)
refused = withdraw.sync_detailed(client=as_user(bob), body=MoneyRequest(user_id=bob_id, amount="1000"))
problem = parsed(refused, Problem)
assert refused.status_code == 409 and problem.code == "INSUFFICIENT_FUNDS", problem
assert balance(bob, bob_id).balance == "100.25"
step("withdraw; an overdraft is a Problem and changes nothing")

logo = parsed(
    create.sync_detailed(
        client=as_user(bob),
        body=CreateContractRequest(
            seller_id=bob_id, buyer_id=alice_id, title="Logo design", amount="300.00",
            inspection_period_hours=72,
        ),
    ),
    ContractView,
)
assert logo.status == "DRAFT" and len(logo.milestones) == 1
contract_id = uuid.UUID(logo.id)
assert parsed(fund.sync_detailed(contract_id, client=as_user(alice)), ContractView).status == "ACTIVE"
assert balance(alice, alice_id).held_in_escrow == "300.00"
parsed(deliver.sync_detailed(contract_id, client=as_user(bob)), ContractView)
assert parsed(release.sync_detailed(contract_id, client=as_user(alice)), ContractView).status == "COMPLETED"
assert parsed(get_contract.sync_detailed(contract_id, client=as_user(bob)), ContractView).status == "COMPLETED"
assert balance(bob, bob_id).balance == "400.25"
step("contract: create, fund, deliver, release")

site = parsed(
    create.sync_detailed(
        client=as_user(alice),
        body=CreateContractRequest(seller_id=bob_id, buyer_id=alice_id, title="Website", amount=50),
    ),
    ContractView,
)
site_id = uuid.UUID(site.id)
parsed(fund.sync_detailed(site_id, client=as_user(alice)), ContractView)
dispute = parsed(
    raise_.sync_detailed(
        client=as_user(alice),
        body=RaiseDisputeRequest(contract_id=site_id, description="Only half of the pages were delivered"),
    ),
    DisputeView,
)
assert parsed(get_contract.sync_detailed(site_id, client=as_user(bob)), ContractView).status == "DISPUTED"
carol, _ = sign_in(os.environ["CAROL_EMAIL"])
queue = parsed(list_.sync_detailed(client=as_user(carol), status="OPEN"), DisputePage)
assert dispute.id in [d.id for d in queue.items], queue.items
decision = ResolveSplit(
    resolution="Half the work was delivered", outcome=ResolveSplitOutcome.SPLIT,
    seller_amount="25.00", buyer_amount="25.00",
)
resolved = parsed(resolve.sync_detailed(uuid.UUID(dispute.id), client=as_user(carol), body=decision), DisputeView)
assert resolved.status == "RESOLVED"
assert parsed(get_contract.sync_detailed(site_id, client=as_user(alice)), ContractView).status == "SETTLED"
assert balance(alice, alice_id).balance == "49.75"
assert balance(bob, bob_id).balance == "425.25"
step("dispute raised and split by an arbiter")

print("python client: all steps passed", flush=True)
