with lines as (
    select order_id, count(*) as line_count, sum(line_amount) as lines_amount
    from {{ ref('stg_order_lines') }}
    group by order_id
),
paid as (
    select order_id, sum(amount) as amount_paid
    from {{ ref('stg_payments') }}
    where succeeded
    group by order_id
)
select
    o.order_id,
    o.customer_id,
    o.order_date,
    o.placed_at,
    o.status,
    o.currency,
    o.subtotal,
    o.tax,
    o.shipping_fee,
    o.total,
    coalesce(l.line_count, 0) as line_count,
    coalesce(l.lines_amount, 0) as lines_amount,
    coalesce(p.amount_paid, 0) as amount_paid,
    o.shipped_at
from {{ ref('stg_orders') }} o
left join lines l on l.order_id = o.order_id
left join paid p on p.order_id = o.order_id
