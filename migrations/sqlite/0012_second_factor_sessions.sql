-- The second factor (TOTP): a session opened by a right password for a
-- customer with a second factor waits for a code before it can do
-- anything but verify one or log out.
ALTER TABLE customer_sessions
    ADD COLUMN second_factor_pending INTEGER NOT NULL DEFAULT 0;
