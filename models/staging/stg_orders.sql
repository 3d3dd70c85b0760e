select
    id as order_id,
    customer_id,
    status,
    placed_at,
    cast(placed_at as date) as order_date,
    shipping_address_id,
    currency,
    subtotal,
    tax,
    shipping_fee,
    total,
    coupon_code,
    shipped_at
from {{ source('shop', 'orders') }}
