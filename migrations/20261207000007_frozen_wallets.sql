-- Why an admin froze a wallet (NULL: not frozen). A frozen wallet receives money but sends none.
ALTER TABLE rm_wallets ADD COLUMN frozen_reason text;
