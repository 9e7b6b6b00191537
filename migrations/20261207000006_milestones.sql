-- A contract's milestones, as the projection folds them (domain::contract::Milestones, JSON).
-- Contracts projected before milestones existed get their one implicit milestone here, as
-- the fold would make it from their events.
ALTER TABLE rm_contracts ADD COLUMN milestones jsonb NOT NULL DEFAULT '[]';
UPDATE rm_contracts SET milestones = jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
    'number', 1,
    'title', title,
    'amount', amount::text,
    'heldAmount', held_amount::text,
    'status', CASE
        WHEN status = 'COMPLETED' THEN 'RELEASED'
        WHEN status = 'REFUNDED' THEN 'REFUNDED'
        WHEN status = 'SETTLED' THEN 'SETTLED'
        WHEN delivered_at IS NOT NULL THEN 'DELIVERED'
        ELSE 'PENDING' END,
    'inspectionPeriodHours', inspection_period_hours,
    'deliveredAt', (extract(epoch FROM delivered_at) * 1000)::bigint,
    'autoReleaseAt', (extract(epoch FROM auto_release_at) * 1000)::bigint)))
WHERE milestones = '[]';
