//! The exec command line, as the adapter hands it over: lossy UTF-8 of whatever the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_core::command::parse_command_line;
use tunnel_core::command::testing::render;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(Some(command)) = parse_command_line(&line) {
        // Whatever parses renders to a line that parses back to the same command.
        assert_eq!(
            parse_command_line(&render(&command)),
            Ok(Some(command)),
            "line {line:?}"
        );
    }
});
