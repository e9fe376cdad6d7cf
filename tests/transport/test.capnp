@0xfa1209eda344aa32;
# Schema used only by the transport tests.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("pl::test");

interface Echo {
  echo @0 (text :Text) -> (text :Text);
  # Returns `text`.

  slow @1 (delayMs :UInt32) -> ();
  # Returns after `delayMs` milliseconds of the server's KJ timer.

  put @2 (data :Data) -> stream;
  # Bulk upload; the server checks a sample of bytes against testPattern and counts.

  total @3 () -> (bytes :UInt64, chunks :UInt32, badChunks :UInt32);
  # What put() received so far.
}
