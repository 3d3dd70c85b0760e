{{
    config(
        materialized='incremental',
        unique_key=['order_id', 'line_no'],
        incremental_strategy='merge'
    )
}}
select
    l.order_id,
    l.line_no,
    l.product_id,
    o.customer_id,
    o.order_date,
    o.placed_at,
    o.status,
    l.quantity,
    l.unit_price,
    l.discount,
    l.line_amount
from {{ ref('stg_order_lines') }} l
join {{ ref('stg_orders') }} o on o.order_id = l.order_id
{% if is_incremental() %}
-- orders placed since the last build, with a day of slack for late status changes
where o.placed_at >= (select max(placed_at) - INTERVAL '1 day' from {{ this }})
{% endif %}
