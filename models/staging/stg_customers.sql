select
    id as customer_id,
    email,
    full_name,
    country,
    created_at,
    marketing_opt_in,
    loyalty_points
from {{ source('shop', 'customers') }}
