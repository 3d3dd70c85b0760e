select
    id as address_id,
    customer_id,
    kind,
    city,
    postal_code,
    country,
    is_default
from {{ source('shop', 'addresses') }}
