//! Every fact the ledger records. Names are past tense; each has a schema version.
//! Past 600 lines: the one enum of every event and its names, kept whole so that the
//! stored form of every fact is read in one place.
//!
//! Stored form: the event-store row keeps [`Event::event_type`] and
//! [`Event::schema_version`] in their own columns and the variant's fields as JSON `data`.
//! Serde's adjacent tagging (`{"type": …, "data": …}`) is how the write side and the
//! readers convert between the two.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::contract::MilestoneTerms;
use crate::dispute::DisputeOutcome;
use crate::email::Email;
use crate::fees::FeeTerms;
use crate::ids::{
    ContractId, DisputeId, PayinId, PayoutId, Timestamp, TransactionId, UserId, WalletId, WebhookId,
};
use crate::money::{Amount, Currency};
use crate::text::Description;
use crate::user::Role;
use crate::webhook::WebhookStatus;

/// How a deposit reached the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DepositChannel {
    /// `POST /api/v1/wallets/deposit`.
    Api,
    /// An operator at the command line.
    Operator,
    /// A pay-in the payment integration confirmed.
    Payin,
}

/// A recorded fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A user account was created (stream `user-<id>`). The password never appears in events.
    UserRegistered {
        /// The new user.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The normalised e-mail address.
        email: Email,
        /// The role it starts with.
        role: Role,
    },
    /// A user was given a more powerful role (stream `user-<id>`).
    RoleGranted {
        /// The user.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The new role.
        role: Role,
    },
    /// An admin suspended the account (stream `user-<id>`): it cannot log in, and its
    /// tokens stop working.
    UserSuspended {
        /// The user.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// Why, as the admin wrote it.
        reason: Description,
    },
    /// An admin lifted the account's suspension (stream `user-<id>`).
    UserReactivated {
        /// The user.
        #[serde(rename = "userId")]
        user_id: UserId,
    },
    /// An application recorded its own audit entry about the user (the seed's `POST /logs`;
    /// stream `user-<id>`).
    ActivityRecorded {
        /// The user it concerns.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// What happened.
        action: String,
        /// The kind of thing it concerns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        /// Which one.
        #[serde(
            rename = "resourceId",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        resource_id: Option<String>,
        /// Anything else, as JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<serde_json::Value>,
        /// When it was recorded.
        #[serde(rename = "recordedAt")]
        recorded_at: Timestamp,
    },
    /// A wallet came into existence with a zero balance (stream `wallet-<id>`).
    WalletOpened {
        /// The wallet.
        #[serde(rename = "walletId")]
        wallet_id: WalletId,
        /// Its owner.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// Its currency, fixed for life.
        currency: Currency,
    },
    /// An admin froze the wallet: it still receives money but sends none.
    WalletFrozen {
        /// Why (shown to admins).
        reason: String,
        /// The admin.
        #[serde(rename = "frozenBy")]
        frozen_by: UserId,
        /// When.
        #[serde(rename = "frozenAt")]
        frozen_at: Timestamp,
    },
    /// An admin lifted the wallet's freeze.
    WalletUnfrozen {
        /// The admin.
        #[serde(rename = "unfrozenBy")]
        unfrozen_by: UserId,
        /// When.
        #[serde(rename = "unfrozenAt")]
        unfrozen_at: Timestamp,
    },
    /// A service (or an admin) announced money on its way in for a user (stream
    /// `payin-<id>`): nothing is credited until it is confirmed.
    PayinCreated {
        /// The pay-in.
        #[serde(rename = "payinId")]
        payin_id: PayinId,
        /// Whose wallet it is for.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// How much.
        amount: Amount,
        /// In which currency.
        currency: Currency,
        /// The payment provider's reference, unique per creator.
        reference: String,
        /// Free text for the statement.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        /// The service or admin.
        #[serde(rename = "createdBy")]
        created_by: UserId,
        /// When.
        #[serde(rename = "createdAt")]
        created_at: Timestamp,
    },
    /// The money arrived: the user's wallet is credited (with `FundsDeposited`, channel
    /// `PAYIN`, in the same transaction).
    PayinConfirmed {
        /// The deposit's movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The service or admin.
        #[serde(rename = "confirmedBy")]
        confirmed_by: UserId,
        /// When.
        #[serde(rename = "confirmedAt")]
        confirmed_at: Timestamp,
    },
    /// The money will not arrive: nothing was credited.
    PayinFailed {
        /// Why.
        reason: String,
        /// The service or admin.
        #[serde(rename = "failedBy")]
        failed_by: UserId,
        /// When.
        #[serde(rename = "failedAt")]
        failed_at: Timestamp,
    },
    /// A user asked to pay money out of its wallet (stream `payout-<id>`); the amount
    /// left its available balance at once (`PayoutFundsReserved`, same transaction).
    PayoutRequested {
        /// The payout.
        #[serde(rename = "payoutId")]
        payout_id: PayoutId,
        /// The owner.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The wallet it leaves.
        #[serde(rename = "walletId")]
        wallet_id: WalletId,
        /// How much.
        amount: Amount,
        /// In which currency.
        currency: Currency,
        /// Where it goes, as the owner wrote it (a bank account, a card).
        destination: String,
        /// Free text for the statement.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        /// The wallet's movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// When.
        #[serde(rename = "requestedAt")]
        requested_at: Timestamp,
    },
    /// The payment provider paid it: the money left the ledger (from the wallet's payouts
    /// in flight to the world account).
    PayoutCompleted {
        /// The payout.
        #[serde(rename = "payoutId")]
        payout_id: PayoutId,
        /// The wallet it left.
        #[serde(rename = "walletId")]
        wallet_id: WalletId,
        /// How much.
        amount: Amount,
        /// In which currency.
        currency: Currency,
        /// The provider's reference for the payment.
        #[serde(rename = "providerReference")]
        provider_reference: String,
        /// The service or admin.
        #[serde(rename = "completedBy")]
        completed_by: UserId,
        /// When.
        #[serde(rename = "completedAt")]
        completed_at: Timestamp,
    },
    /// The payout failed: the amount went back to the wallet's available balance
    /// (`PayoutFundsReturned`, same transaction).
    PayoutFailed {
        /// The payout.
        #[serde(rename = "payoutId")]
        payout_id: PayoutId,
        /// Why.
        reason: String,
        /// The wallet's movement that returned the money.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The service or admin.
        #[serde(rename = "failedBy")]
        failed_by: UserId,
        /// When.
        #[serde(rename = "failedAt")]
        failed_at: Timestamp,
    },
    /// A payout's amount left this wallet's available balance for its payouts in flight.
    PayoutFundsReserved {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payout.
        #[serde(rename = "payoutId")]
        payout_id: PayoutId,
        /// How much.
        amount: Amount,
        /// What the owner said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// A failed payout's amount came back from the payouts in flight to this wallet.
    PayoutFundsReturned {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payout.
        #[serde(rename = "payoutId")]
        payout_id: PayoutId,
        /// How much.
        amount: Amount,
    },
    /// Money came in from outside the ledger (the world account) to this wallet.
    FundsDeposited {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// What the depositor said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        /// How the money came in. Added in schema version 2; version-1 events (which
        /// predate it, and all came through the API) are upcast with `API`.
        channel: DepositChannel,
    },
    /// Money left the ledger from this wallet to the world account.
    FundsWithdrawn {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// What the owner said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// The debit leg of a transfer, on the payer's wallet.
    TransferSent {
        /// The movement, shared with the matching [`Event::TransferReceived`].
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payee's wallet.
        #[serde(rename = "toWalletId")]
        to_wallet_id: WalletId,
        /// The payee.
        #[serde(rename = "toUserId")]
        to_user_id: UserId,
        /// How much.
        amount: Amount,
        /// What the payer said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// The credit leg of a transfer, on the payee's wallet.
    TransferReceived {
        /// The movement, shared with the matching [`Event::TransferSent`].
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The payer's wallet.
        #[serde(rename = "fromWalletId")]
        from_wallet_id: WalletId,
        /// The payer.
        #[serde(rename = "fromUserId")]
        from_user_id: UserId,
        /// How much.
        amount: Amount,
        /// What the payer said about it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
    },
    /// An escrow contract was drafted (stream `contract-<id>`).
    ContractCreated {
        /// The contract.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// Who pays.
        #[serde(rename = "buyerId")]
        buyer_id: UserId,
        /// Who delivers and gets paid.
        #[serde(rename = "sellerId")]
        seller_id: UserId,
        /// Short title.
        title: String,
        /// Longer terms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        /// The price, held in escrow once funded.
        amount: Amount,
        /// Currency of the price.
        currency: Currency,
        /// Hours the buyer has after delivery before funds release by themselves.
        #[serde(
            rename = "inspectionPeriodHours",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        inspection_period_hours: Option<u32>,
        /// A draft not funded by then expires. Absent in contracts without a deadline (and
        /// in every contract created before deadlines existed).
        #[serde(rename = "fundBy", default, skip_serializing_if = "Option::is_none")]
        fund_by: Option<Timestamp>,
        /// The platform fee copied from the schedule in force; absent: no fee (and in every
        /// contract created before fees existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee: Option<FeeTerms>,
        /// The stages the price is paid in; absent: one implicit milestone, the whole
        /// contract (and in every contract created before milestones existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milestones: Option<Vec<MilestoneTerms>>,
        /// The party that drafted it.
        #[serde(rename = "createdBy")]
        created_by: UserId,
        /// When it was drafted.
        #[serde(rename = "createdAt")]
        created_at: Timestamp,
    },
    /// The buyer's money moved into the contract's escrow account (with [`Event::EscrowHeld`]
    /// on the buyer's wallet).
    ContractFunded {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much is now held.
        amount: Amount,
        /// The buyer's prepaid share of the fee, held beside the price.
        #[serde(rename = "feeHeld", default, skip_serializing_if = "Option::is_none")]
        fee_held: Option<Amount>,
    },
    /// The seller says the work is delivered; the inspection window starts.
    ContractDelivered {
        /// When.
        #[serde(rename = "deliveredAt")]
        delivered_at: Timestamp,
        /// When the held funds release to the seller unless the buyer acts first.
        #[serde(
            rename = "autoReleaseAt",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        auto_release_at: Option<Timestamp>,
        /// The milestone delivered (from 1); absent: every milestone not delivered yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milestone: Option<u16>,
    },
    /// Held money was paid out to the seller (with [`Event::EscrowPaymentReceived`]).
    ContractReleased {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// True when the inspection window expired and the system released.
        #[serde(default)]
        automatic: bool,
        /// The seller's share of the fee, deducted from the payment.
        #[serde(rename = "sellerFee", default, skip_serializing_if = "Option::is_none")]
        seller_fee: Option<Amount>,
        /// The buyer's share of the fee, moved from the prepaid fee to revenue.
        #[serde(rename = "buyerFee", default, skip_serializing_if = "Option::is_none")]
        buyer_fee: Option<Amount>,
        /// The milestone paid (from 1); absent: the contract as a whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milestone: Option<u16>,
    },
    /// Held money went back to the buyer (with [`Event::EscrowRefundReceived`]).
    ContractRefunded {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// How much.
        amount: Amount,
        /// The buyer's prepaid fee returned with it.
        #[serde(
            rename = "feeReturned",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        fee_returned: Option<Amount>,
        /// The milestone refunded (from 1); absent: the contract as a whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milestone: Option<u16>,
    },
    /// A draft was called off.
    ContractCancelled {
        /// The party that cancelled.
        #[serde(rename = "cancelledBy")]
        cancelled_by: UserId,
    },
    /// A draft was not funded by its `fundBy` deadline (decided by the system).
    ContractExpired {
        /// When the scheduler expired it.
        #[serde(rename = "expiredAt")]
        expired_at: Timestamp,
    },
    /// A dispute froze the contract.
    ContractDisputed {
        /// The dispute.
        #[serde(rename = "disputeId")]
        dispute_id: DisputeId,
    },
    /// An arbiter's decision emptied the escrow account.
    ContractSettled {
        /// The dispute that was resolved.
        #[serde(rename = "disputeId")]
        dispute_id: DisputeId,
        /// Release, refund or split.
        outcome: DisputeOutcome,
        /// Paid to the seller (decimal, may be zero).
        #[serde(rename = "sellerAmount")]
        seller_amount: Decimal,
        /// Returned to the buyer (decimal, may be zero).
        #[serde(rename = "buyerAmount")]
        buyer_amount: Decimal,
        /// The seller's share of the fee on the seller's part.
        #[serde(rename = "sellerFee", default, skip_serializing_if = "Option::is_none")]
        seller_fee: Option<Amount>,
        /// The buyer's share of the fee on the seller's part, from the prepaid fee.
        #[serde(rename = "buyerFee", default, skip_serializing_if = "Option::is_none")]
        buyer_fee: Option<Amount>,
        /// The buyer's prepaid fee returned with the buyer's part.
        #[serde(
            rename = "feeReturned",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        fee_returned: Option<Amount>,
    },
    /// The buyer's prepaid share of a contract's fee, on the buyer's wallet at funding:
    /// held in the contract's escrow until payment.
    FeeHeld {
        /// The fee movement ([`TransactionId::fee`] of the funding).
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract holding it.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// Prepaid fee back to the buyer's wallet with a refund.
    FeeReturned {
        /// The fee movement ([`TransactionId::fee`] of the refund).
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract it came from.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// The seller's share of a payment's fee, on the seller's wallet (its debit leg; the
    /// credit is [`Event::FeeCollected`]).
    FeeCharged {
        /// The fee movement ([`TransactionId::fee`] of the payment).
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract paid from.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// A payment's fee into the platform's revenue (stream `revenue-<id>`): the seller's
    /// share (debited by [`Event::FeeCharged`]) and the buyer's (from the escrow account).
    FeeCollected {
        /// The fee movement ([`TransactionId::fee`] of the payment).
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract paid from.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// The revenue account's currency.
        currency: Currency,
        /// The whole fee.
        amount: Amount,
        /// The part that comes from the buyer's prepaid fee in escrow.
        #[serde(
            rename = "fromEscrow",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        from_escrow: Option<Amount>,
    },
    /// An admin moved platform revenue out of the ledger.
    RevenueWithdrawn {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The revenue account's currency.
        currency: Currency,
        /// How much.
        amount: Amount,
        /// The admin.
        #[serde(
            rename = "withdrawnBy",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        withdrawn_by: Option<UserId>,
    },
    /// An admin set a currency's fee schedule (stream `feeschedule-<id>`).
    FeeScheduleSet {
        /// The currency it applies to.
        currency: Currency,
        /// The rule.
        terms: FeeTerms,
        /// The admin.
        #[serde(rename = "setBy", default, skip_serializing_if = "Option::is_none")]
        set_by: Option<UserId>,
        /// When.
        #[serde(rename = "setAt")]
        set_at: Timestamp,
    },
    /// The debit leg of a funding, on the buyer's wallet: the money is now held.
    EscrowHeld {
        /// The movement, shared with [`Event::ContractFunded`].
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract holding it.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// The credit leg of a release, on the seller's wallet.
    EscrowPaymentReceived {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract it came from.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// The credit leg of a refund, on the buyer's wallet.
    EscrowRefundReceived {
        /// The movement.
        #[serde(rename = "transactionId")]
        transaction_id: TransactionId,
        /// The contract it came from.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// How much.
        amount: Amount,
    },
    /// A party opened a dispute (stream `dispute-<id>`).
    DisputeRaised {
        /// The dispute.
        #[serde(rename = "disputeId")]
        dispute_id: DisputeId,
        /// The contract in dispute.
        #[serde(rename = "contractId")]
        contract_id: ContractId,
        /// The party that raised it.
        #[serde(rename = "raisedBy")]
        raised_by: UserId,
        /// What is wrong.
        description: String,
        /// When it was raised.
        #[serde(rename = "raisedAt")]
        raised_at: Timestamp,
    },
    /// An arbiter or admin decided the dispute.
    DisputeResolved {
        /// The dispute.
        #[serde(rename = "disputeId")]
        dispute_id: DisputeId,
        /// Who decided.
        #[serde(rename = "resolvedBy")]
        resolved_by: UserId,
        /// The reasoning.
        resolution: String,
        /// Release, refund or split.
        outcome: DisputeOutcome,
        /// Paid to the seller.
        #[serde(rename = "sellerAmount")]
        seller_amount: Decimal,
        /// Returned to the buyer.
        #[serde(rename = "buyerAmount")]
        buyer_amount: Decimal,
        /// When it was decided.
        #[serde(rename = "resolvedAt")]
        resolved_at: Timestamp,
    },
    /// An admin registered a webhook endpoint (stream `webhook-<id>`; its secret is kept
    /// outside events).
    WebhookEndpointCreated {
        /// The endpoint.
        #[serde(rename = "webhookId")]
        webhook_id: WebhookId,
        /// Where deliveries go.
        url: String,
        /// Which events it receives.
        events: Vec<String>,
        /// What it is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The admin.
        #[serde(rename = "createdBy")]
        created_by: UserId,
        /// When.
        #[serde(rename = "createdAt")]
        created_at: Timestamp,
    },
    /// An admin changed a webhook endpoint; absent fields are unchanged (an empty
    /// description removes it).
    WebhookEndpointUpdated {
        /// The endpoint.
        #[serde(rename = "webhookId")]
        webhook_id: WebhookId,
        /// A new URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// A new filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events: Option<Vec<String>>,
        /// A new description.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// `ACTIVE` (which re-enables a disabled endpoint) or `PAUSED`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<WebhookStatus>,
        /// The admin.
        #[serde(rename = "updatedBy")]
        updated_by: UserId,
        /// When.
        #[serde(rename = "updatedAt")]
        updated_at: Timestamp,
    },
    /// An admin replaced a webhook endpoint's signing secret; the previous one still
    /// signs, beside the new one, until `previousValidUntil`.
    WebhookSecretRotated {
        /// The endpoint.
        #[serde(rename = "webhookId")]
        webhook_id: WebhookId,
        /// The admin.
        #[serde(rename = "rotatedBy")]
        rotated_by: UserId,
        /// When.
        #[serde(rename = "rotatedAt")]
        rotated_at: Timestamp,
        /// When the previous secret stops signing.
        #[serde(rename = "previousValidUntil")]
        previous_valid_until: Timestamp,
    },
    /// The ledger stopped a webhook endpoint's deliveries: one failed for longer than the
    /// maximum age.
    WebhookEndpointDisabled {
        /// The endpoint.
        #[serde(rename = "webhookId")]
        webhook_id: WebhookId,
        /// The delivery that failed (the first sent once re-enabled).
        #[serde(rename = "deliveryId")]
        delivery_id: uuid::Uuid,
        /// Its last error.
        reason: String,
        /// When.
        #[serde(rename = "disabledAt")]
        disabled_at: Timestamp,
    },
    /// An admin deleted a webhook endpoint.
    WebhookEndpointDeleted {
        /// The endpoint.
        #[serde(rename = "webhookId")]
        webhook_id: WebhookId,
        /// The admin.
        #[serde(rename = "deletedBy")]
        deleted_by: UserId,
        /// When.
        #[serde(rename = "deletedAt")]
        deleted_at: Timestamp,
    },
}

impl Event {
    /// The type name stored beside the data; equal to the serde tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => "UserRegistered",
            Event::RoleGranted { .. } => "RoleGranted",
            Event::UserSuspended { .. } => "UserSuspended",
            Event::UserReactivated { .. } => "UserReactivated",
            Event::ActivityRecorded { .. } => "ActivityRecorded",
            Event::WalletOpened { .. } => "WalletOpened",
            Event::WalletFrozen { .. } => "WalletFrozen",
            Event::PayinCreated { .. } => "PayinCreated",
            Event::PayinConfirmed { .. } => "PayinConfirmed",
            Event::PayinFailed { .. } => "PayinFailed",
            Event::WalletUnfrozen { .. } => "WalletUnfrozen",
            Event::PayoutRequested { .. } => "PayoutRequested",
            Event::PayoutCompleted { .. } => "PayoutCompleted",
            Event::PayoutFailed { .. } => "PayoutFailed",
            Event::PayoutFundsReserved { .. } => "PayoutFundsReserved",
            Event::PayoutFundsReturned { .. } => "PayoutFundsReturned",
            Event::FundsDeposited { .. } => "FundsDeposited",
            Event::FundsWithdrawn { .. } => "FundsWithdrawn",
            Event::TransferSent { .. } => "TransferSent",
            Event::TransferReceived { .. } => "TransferReceived",
            Event::ContractCreated { .. } => "ContractCreated",
            Event::ContractFunded { .. } => "ContractFunded",
            Event::ContractDelivered { .. } => "ContractDelivered",
            Event::ContractReleased { .. } => "ContractReleased",
            Event::ContractRefunded { .. } => "ContractRefunded",
            Event::ContractCancelled { .. } => "ContractCancelled",
            Event::ContractExpired { .. } => "ContractExpired",
            Event::FeeHeld { .. } => "FeeHeld",
            Event::FeeReturned { .. } => "FeeReturned",
            Event::FeeCharged { .. } => "FeeCharged",
            Event::FeeCollected { .. } => "FeeCollected",
            Event::RevenueWithdrawn { .. } => "RevenueWithdrawn",
            Event::FeeScheduleSet { .. } => "FeeScheduleSet",
            Event::ContractDisputed { .. } => "ContractDisputed",
            Event::ContractSettled { .. } => "ContractSettled",
            Event::EscrowHeld { .. } => "EscrowHeld",
            Event::EscrowPaymentReceived { .. } => "EscrowPaymentReceived",
            Event::EscrowRefundReceived { .. } => "EscrowRefundReceived",
            Event::DisputeRaised { .. } => "DisputeRaised",
            Event::DisputeResolved { .. } => "DisputeResolved",
            Event::WebhookEndpointCreated { .. } => "WebhookEndpointCreated",
            Event::WebhookEndpointUpdated { .. } => "WebhookEndpointUpdated",
            Event::WebhookSecretRotated { .. } => "WebhookSecretRotated",
            Event::WebhookEndpointDisabled { .. } => "WebhookEndpointDisabled",
            Event::WebhookEndpointDeleted { .. } => "WebhookEndpointDeleted",
        }
    }

    /// The current schema version of this event type's data. Readers upcast older
    /// versions to this one before deserialising.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::FundsDeposited { .. } => 2,
            _ => 1,
        }
    }
}

/// Every event type's name, as [`Event::event_type`] gives it (a webhook filter may name
/// any of them).
pub const EVENT_TYPES: &[&str] = &[
    "UserRegistered",
    "RoleGranted",
    "UserSuspended",
    "UserReactivated",
    "ActivityRecorded",
    "WalletOpened",
    "WalletFrozen",
    "PayinCreated",
    "PayinConfirmed",
    "PayinFailed",
    "WalletUnfrozen",
    "PayoutRequested",
    "PayoutCompleted",
    "PayoutFailed",
    "PayoutFundsReserved",
    "PayoutFundsReturned",
    "FundsDeposited",
    "FundsWithdrawn",
    "TransferSent",
    "TransferReceived",
    "ContractCreated",
    "ContractFunded",
    "ContractDelivered",
    "ContractReleased",
    "ContractRefunded",
    "ContractCancelled",
    "ContractExpired",
    "FeeHeld",
    "FeeReturned",
    "FeeCharged",
    "FeeCollected",
    "RevenueWithdrawn",
    "FeeScheduleSet",
    "ContractDisputed",
    "ContractSettled",
    "EscrowHeld",
    "EscrowPaymentReceived",
    "EscrowRefundReceived",
    "DisputeRaised",
    "DisputeResolved",
    "WebhookEndpointCreated",
    "WebhookEndpointUpdated",
    "WebhookSecretRotated",
    "WebhookEndpointDisabled",
    "WebhookEndpointDeleted",
];
