-- The CREATE TABLE and CREATE INDEX blocks of seed 003 (AlgoMirror's schema document), as
-- written there for SQLite: MySQL's inline INDEX and UNIQUE KEY included. Kept equal to the
-- seed by tests/ops/test_schema_tools.py when the seeds are at hand.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username VARCHAR(80) UNIQUE NOT NULL,
    email VARCHAR(120) UNIQUE NOT NULL,
    password_hash VARCHAR(256) NOT NULL,
    is_admin BOOLEAN DEFAULT FALSE,
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_login TIMESTAMP,
    
    INDEX idx_username (username),
    INDEX idx_email (email)
);

CREATE TABLE trading_accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    account_name VARCHAR(100) NOT NULL,
    broker VARCHAR(50) NOT NULL,
    api_key_encrypted TEXT,
    host_url VARCHAR(200) DEFAULT 'http://127.0.0.1:5000',
    websocket_url VARCHAR(200) DEFAULT 'ws://127.0.0.1:8765',
    is_primary BOOLEAN DEFAULT FALSE,
    is_active BOOLEAN DEFAULT TRUE,
    last_connected TIMESTAMP,
    connection_status VARCHAR(20) DEFAULT 'disconnected',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE,
    INDEX idx_user_id (user_id),
    INDEX idx_is_primary (is_primary),
    INDEX idx_is_active (is_active)
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    order_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(50) NOT NULL,
    exchange VARCHAR(10) NOT NULL,
    action VARCHAR(10) NOT NULL,  -- BUY/SELL
    quantity INTEGER NOT NULL,
    order_type VARCHAR(20) NOT NULL,  -- MARKET/LIMIT/SL/SLM
    price DECIMAL(10,2),
    trigger_price DECIMAL(10,2),
    product VARCHAR(10),  -- MIS/CNC/NRML
    status VARCHAR(20) NOT NULL,  -- PENDING/EXECUTED/CANCELLED/REJECTED
    filled_quantity INTEGER DEFAULT 0,
    average_price DECIMAL(10,2),
    placed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    executed_at TIMESTAMP,
    
    FOREIGN KEY (account_id) REFERENCES trading_accounts(id) ON DELETE CASCADE,
    INDEX idx_account_id (account_id),
    INDEX idx_order_id (order_id),
    INDEX idx_symbol (symbol),
    INDEX idx_status (status),
    INDEX idx_placed_at (placed_at)
);

CREATE TABLE positions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    symbol VARCHAR(50) NOT NULL,
    exchange VARCHAR(10) NOT NULL,
    quantity INTEGER NOT NULL,
    product VARCHAR(10),
    average_price DECIMAL(10,2) NOT NULL,
    current_price DECIMAL(10,2),
    pnl DECIMAL(10,2),
    pnl_percent DECIMAL(5,2),
    day_change DECIMAL(10,2),
    day_change_percent DECIMAL(5,2),
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    
    FOREIGN KEY (account_id) REFERENCES trading_accounts(id) ON DELETE CASCADE,
    INDEX idx_account_id (account_id),
    INDEX idx_symbol (symbol),
    UNIQUE KEY unique_position (account_id, symbol, product)
);

CREATE TABLE holdings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    symbol VARCHAR(50) NOT NULL,
    exchange VARCHAR(10) NOT NULL,
    quantity INTEGER NOT NULL,
    average_price DECIMAL(10,2) NOT NULL,
    current_price DECIMAL(10,2),
    pnl DECIMAL(10,2),
    pnl_percent DECIMAL(5,2),
    invested_value DECIMAL(10,2),
    current_value DECIMAL(10,2),
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    
    FOREIGN KEY (account_id) REFERENCES trading_accounts(id) ON DELETE CASCADE,
    INDEX idx_account_id (account_id),
    INDEX idx_symbol (symbol),
    UNIQUE KEY unique_holding (account_id, symbol)
);

CREATE TABLE activity_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER,
    action VARCHAR(100) NOT NULL,
    details TEXT,
    ip_address VARCHAR(45),
    user_agent VARCHAR(200),
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE SET NULL,
    INDEX idx_user_id (user_id),
    INDEX idx_action (action),
    INDEX idx_timestamp (timestamp),
    INDEX idx_user_timestamp (user_id, timestamp)
);

CREATE TABLE strategies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    description TEXT,
    strategy_type VARCHAR(50),  -- momentum/mean_reversion/arbitrage
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE strategy_deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    strategy_id INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    capital_allocated DECIMAL(10,2),
    max_positions INTEGER DEFAULT 5,
    status VARCHAR(20) DEFAULT 'inactive',  -- active/inactive/paused
    started_at TIMESTAMP,
    stopped_at TIMESTAMP,
    total_pnl DECIMAL(10,2) DEFAULT 0,
    
    FOREIGN KEY (strategy_id) REFERENCES strategies(id) ON DELETE CASCADE,
    FOREIGN KEY (account_id) REFERENCES trading_accounts(id) ON DELETE CASCADE,
    INDEX idx_strategy_id (strategy_id),
    INDEX idx_account_id (account_id),
    INDEX idx_status (status)
);

CREATE TABLE trading_hours_templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    timezone VARCHAR(50) DEFAULT 'Asia/Kolkata',
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE trading_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id INTEGER NOT NULL,
    day_of_week INTEGER NOT NULL,  -- 0=Monday, 6=Sunday
    pre_market_start TIME,
    pre_market_end TIME,
    market_open TIME,
    market_close TIME,
    post_market_start TIME,
    post_market_end TIME,
    is_trading_day BOOLEAN DEFAULT TRUE,
    
    FOREIGN KEY (template_id) REFERENCES trading_hours_templates(id) ON DELETE CASCADE,
    INDEX idx_template_id (template_id),
    INDEX idx_day_of_week (day_of_week)
);

CREATE TABLE market_holidays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id INTEGER NOT NULL,
    date DATE NOT NULL,
    description VARCHAR(200),
    holiday_type VARCHAR(50),  -- full_day/muhurat/special
    
    FOREIGN KEY (template_id) REFERENCES trading_hours_templates(id) ON DELETE CASCADE,
    INDEX idx_template_id (template_id),
    INDEX idx_date (date)
);

CREATE TABLE websocket_connections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    connection_id VARCHAR(100) UNIQUE,
    status VARCHAR(20) DEFAULT 'disconnected',
    connected_at TIMESTAMP,
    disconnected_at TIMESTAMP,
    messages_received INTEGER DEFAULT 0,
    last_heartbeat TIMESTAMP,
    
    FOREIGN KEY (account_id) REFERENCES trading_accounts(id) ON DELETE CASCADE,
    INDEX idx_account_id (account_id),
    INDEX idx_status (status)
);

CREATE TABLE failover_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    from_account_id INTEGER,
    to_account_id INTEGER,
    reason VARCHAR(100),
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN DEFAULT TRUE,
    error_message TEXT,
    
    FOREIGN KEY (from_account_id) REFERENCES trading_accounts(id) ON DELETE SET NULL,
    FOREIGN KEY (to_account_id) REFERENCES trading_accounts(id) ON DELETE SET NULL,
    INDEX idx_timestamp (timestamp)
);

CREATE INDEX idx_orders_account_status ON orders(account_id, status);

CREATE INDEX idx_positions_account_symbol ON positions(account_id, symbol);

CREATE INDEX idx_activity_user_action ON activity_logs(user_id, action);

CREATE INDEX idx_accounts_user_primary ON trading_accounts(user_id, is_primary) 
    INCLUDE (account_name, broker);
