-- Where this server's Unix sockets are (libpq's default when no host is given).
SELECT current_setting('unix_socket_directories')
