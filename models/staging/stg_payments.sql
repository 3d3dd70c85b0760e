select
    id as payment_id,
    order_id,
    method,
    amount,
    paid_at,
    succeeded
from {{ source('shop', 'payments') }}
