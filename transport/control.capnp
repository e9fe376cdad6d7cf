# The node daemon's local control socket (transport/control_socket.h): what `peerlight render`
# says to the node daemon of its own machine, over a Unix stream socket. Not a network
# protocol: the socket is reachable from this machine only, by the daemon's own uid (or, for the
# system daemon started with --control-group, by that group's members).
#
# The daemon serves NodeControl as the bootstrap capability of every connection. Three things
# can be asked of it:
#   - an owner job: this machine's owner is rendering, so the node revokes remote leases on its
#     devices and refuses new ones while the job lasts (NodeControl.ownerJob);
#   - a render job: the daemon becomes the Primary of a render whose compiled scene (its
#     encoded form: transport/chunk_codec.h EncodedScene) the client uploads, pushes progress
#     back and hands the finished film over (NodeControl.render, then RenderJob);
#   - a render session: the daemon becomes the Primary of a long-lived session whose compiled
#     scene the client sends as chunks, then updates generation by generation; the passes go
#     to the client's listener, films on request (NodeControl.session, then SessionJob).
# Cancelling is dropping: releasing the OwnerJob, RenderJob or SessionJob capability, or closing
# the connection (the client process ending does that), ends the job.
#
# Errors: what the client acts on (a refusal it may answer by rendering in its own process, a
# failure it reports) is an Outcome plus a message for people, never text to be matched. A
# malformed message, a call out of order or a call on a job that ended fails with a Cap'n Proto
# exception; a frame beyond the size limit (or bytes that are no Cap'n Proto frame at all)
# closes that connection (Cap'n Proto's Abort message says why). The daemon keeps serving its
# other clients either way.
#
# Sizes: every message either way is at most kMaxControlMessageBytes (8 MiB, enforced by the
# reader before it allocates); the render data travels in RenderJob.write or SessionJob.put
# chunks of at most 4 MiB and films in slices of at most 4 MiB, so none is one giant message.
#
# Evolution rule (as protocol.capnp): fields and methods are only ever ADDED, with the next free
# number; nothing is renumbered, retyped or removed.

@0xc05a50df0e1a84bf;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("pl::ctl");

enum Outcome {
  # How a request or a job ended, as the client is told it (with a message for people).
  ok @0;
  busy @1;
  # A limit is reached for now: render jobs running, render data being uploaded, clients, or
  # one owner job / one render job per connection. The client may render in its own process.
  shuttingDown @2;
  # The daemon is stopping (a job it ran is cancelled with this outcome).
  badParams @3;
  # The request's fields are invalid: token, frame (width, height, spp), peers, flags.
  badData @4;
  # The render data: not a valid encoded scene, shorter or longer than declared, or its
  # camera does not match the frame.
  tooLarge @5;
  # The render data or the film is beyond what this daemon takes (the message names the bound).
  cancelled @6;
  # The job was cancelled before it ended (the daemon logs who cancelled it and why).
  failed @7;
  # The render itself failed (no device left, a result that cannot be merged, ...).
  passed @8;
  # SessionJob.filmAt: the generation has gone past those samples (a restart to them gives
  # them).
}

interface NodeControl {
  # The bootstrap capability of a connection to the control socket.

  ownerJob @0 (token :Text) -> (outcome :Outcome, message :Text, job :OwnerJob);
  # This machine's owner starts rendering. token: [0-9a-zA-Z], 1 to 64 characters; the owner's
  # Primary sends the same token in LeaseRequest.ownerToken (protocol.capnp), so its own leases
  # are kept while every other Primary's are revoked. Replies once the remote leases are
  # revoked. outcome: ok (job set), badParams (bad token) or busy (this connection holds an
  # owner job already). The owner job lasts while `job` is held and the connection is open.

  render @1 (request :RenderRequest, listener :ProgressListener)
         -> (outcome :Outcome, message :Text, job :RenderJob);
  # Hands a render job to the daemon. Checked before any data travels: outcome badParams (the
  # token or the frame), tooLarge (request.dataBytes beyond the daemon's bound, or a film
  # beyond what it gives one job), busy (uploads together beyond the bound, render jobs
  # running, or this connection holds a render job already) or shuttingDown; ok: `job` takes
  # the data (write, then start). listener: where the daemon pushes progress while the job
  # runs (it may be a null capability: no progress).

  session @2 (request :SessionRequest, listener :SessionListener)
          -> (outcome :Outcome, message :Text, job :SessionJob);
  # Opens a render session held by the daemon (`peerlight session` when a daemon runs): the
  # daemon is its Primary, as for render(), and the session lasts while `job` is held and the
  # connection is open. The client keeps the scene and compiles its edits; it sends the
  # compiled data as chunks (SessionJob.missing, put), then each generation's manifest
  # (SessionJob.update) or camera (SessionJob.camera). Checked before any data travels, as
  # render(): badParams (token, params), tooLarge, busy (one session per connection, sessions
  # per uid, the memory budget), shuttingDown. listener: where the passes go (not null).
}

interface OwnerJob {
  # Holding it holds the owner job; dropping it (or closing the connection) ends it, and the
  # node offers its devices again.
}

struct RenderParams {
  # What `peerlight render` asks of the daemon beyond the render data.
  width @0 :UInt32;           # the frame: must be the render data's camera size
  height @1 :UInt32;
  spp @2 :UInt32;             # samples per pixel
  peers @3 :List(Text);
  # Render Nodes ("HOST:PORT", at most 1024, each at most 255 bytes), as --peer. Empty (and
  # unless noMdns or localOnly): the nodes the daemon's mDNS browse finds, also during the render.
  localOnly @4 :Bool;         # this machine's devices only
  noLocal @5 :Bool;           # not this machine's devices
  noOwnerPreempt @6 :Bool;    # do not revoke remote leases on this machine's devices
  noMdns @7 :Bool;            # only `peers` (and this machine)
  primaryName @8 :Text;       # "host/pid" of the command, for the logs (at most 255 bytes)
  timeLimitMs @9 :UInt32;
  # 0: render to spp. Else the job ends at the last complete pass (1, 2, 4, ... spp) once this
  # long has passed since it started (at the first pass, if none is complete by then); the
  # film then holds the samples result() names.
  regionX @10 :UInt32;
  regionY @11 :UInt32;
  regionWidth @12 :UInt32;
  regionHeight @13 :UInt32;
  # A render border (--region): only these pixels are rendered; the film's others stay empty.
  # Width and height 0: the whole image. Must lie within width x height.
  noiseThreshold @14 :Float64;
  # Render until clean (--noise-threshold): 0 none, else finite and positive; the very value
  # the command parsed (tiles are judged against it: a float would change which retire).
}

struct SessionRequest {
  token @0 :Text;
  # As RenderRequest's: the session's leases on this machine carry it.
  params @1 :RenderParams;
  # width, height: the first generation's frame; spp: its target (each update names its own);
  # the rest as for a render job, per generation (timeLimitMs is counted from each
  # generation's start).
  dataBytes @2 :UInt64;
  # Size of the encoded scene the client will send (1 to the daemon's bound): reserved against
  # the daemon's memory budget; the session's chunks may add up to twice this and 16 MiB (edits
  # add chunks; each chunk counts at least 512 bytes), and a put beyond that fails.
  passFilms @3 :Bool;
  # Every pass event carries its film (SessionListener.pass): for a client that shows or writes
  # each pass.
}

struct RenderRequest {
  token @0 :Text;
  # As ownerJob's: the job's leases on this machine carry it (the job is the owner's unless
  # params.noOwnerPreempt or params.noLocal).
  params @1 :RenderParams;
  dataBytes @2 :UInt64;
  # Size of the encoded scene (transport/chunk_codec.h serializeEncodedScene()) that RenderJob.write will
  # carry: 1 to the daemon's bound (half of its machine's memory). Reserved against the bound on
  # the uploads in flight until start() or the job's end.
}

interface RenderJob {
  # One render job; dropping it (or closing the connection) cancels the job at any stage.

  write @0 (chunk :Data) -> stream;
  # The next bytes of the render data, in order, at most 4 MiB per call. Bytes beyond
  # request.dataBytes make the job fail with badData (reported by start()).

  start @1 () -> (outcome :Outcome, message :Text);
  # All the data is written: the daemon decodes it and starts the job. outcome ok: the job
  # runs (the daemon is its Primary); otherwise the job was refused and ends here (badData,
  # busy, shuttingDown, badParams), and the client may render by itself.

  result @2 () -> (outcome :Outcome, message :Text, stats :RenderStats, filmBytes :UInt64,
                   spp :UInt32, samplesBytes :UInt64);
  # Waits for the end of a started job. ok: the film holds spp samples per pixel (params.spp,
  # or fewer when params.timeLimitMs ended it; 0 from a daemon that predates the field:
  # params.spp); stats are the Primary's final statistics and filmBytes the size of the film's
  # sums (width x height x channels int64, little-endian, row-major), to be read with readFilm.
  # samplesBytes: 0 when every pixel holds spp samples; else (params.noiseThreshold retired
  # some pixels early) width x height x 4, each pixel's sample count (uint32, little-endian,
  # row-major), which follow the sums in readFilm's bytes. Otherwise failed, cancelled or
  # shuttingDown, with a message.

  readFilm @3 (offset :UInt64, bytes :UInt32) -> (data :Data);
  # After result() said ok: `bytes` (at most 4 MiB) from `offset` (fewer at the end) of the
  # film's sums followed by its sample counts (filmBytes + samplesBytes in all).
}

interface SessionJob {
  # One render session held by the daemon; dropping it (or closing the connection) ends it and
  # frees its leases. Calls are carried out in order. A call with a malformed argument fails
  # with an exception; the session goes on.

  missing @0 (hashes :List(Data)) -> (missing :List(UInt32));
  # Which of these chunk names (16 bytes each: XXH3-128, as transport/chunk_codec.h; at most
  # 65536) the session does not hold: their indices, in order.

  put @1 (hash :Data, chunk :Data) -> stream;
  # One encoded chunk (at most 4 MiB and its header), named by `hash`. Its bytes are verified
  # against the name when a device decodes them. A chunk beyond the session's bound fails the
  # call (and the next update that needs it).

  update @2 (manifest :Data, spp :UInt32)
         -> (outcome :Outcome, message :Text, generation :UInt64);
  # A new generation: the scene whose manifest (serializeManifest()) this is, to `spp` samples
  # per pixel; every chunk it names must have been put. badData: a manifest that does not
  # parse, a chunk missing or its camera invalid; badParams: spp or the frame; tooLarge: a
  # film beyond what the daemon gives one job. The session starts with the first update.

  camera @3 (camera :Data, spp :UInt32)
         -> (outcome :Outcome, message :Text, generation :UInt64);
  # A new generation of the current scene with another camera: one core/kernel Camera, as
  # RenderData's camera array holds it (little-endian; validated). Nodes get one small chunk.

  restart @4 (spp :UInt32) -> (outcome :Outcome, message :Text, generation :UInt64);
  # A new generation of the same state to `spp` (to save at a count the schedule never stops
  # at).

  peer @5 (address :Text) -> (outcome :Outcome, message :Text);
  # A Render Node ("HOST:PORT") to use from now on.

  stats @6 () -> (stats :RenderStats);
  # The session's statistics now.

  filmAt @7 (generation :UInt64, spp :UInt32)
         -> (outcome :Outcome, message :Text, film :FilmInfo, data :FilmData);
  # Answers once generation `generation`'s film holds exactly `spp` samples per pixel (at
  # once if it does now; spp 0: once the generation is finished, at its target or where the
  # time limit ended it). cancelled: another generation replaced it first; passed: it has gone
  # past spp, or its schedule does not stop there (a restart to spp gives it); failed: the time
  # limit ended it before; busy: the client holds as many films as it may. `data` holds that
  # film until dropped.
}

struct FilmInfo {
  generation @0 :UInt64;
  spp @1 :UInt32;          # samples per pixel of the film (the most any pixel holds)
  width @2 :UInt32;
  height @3 :UInt32;
  channels @4 :UInt32;     # values per pixel (core/kernel filmChannels)
  sumBytes @5 :UInt64;     # width x height x channels int64 sums, little-endian, row-major
  samplesBytes @6 :UInt64; # 0, or width x height x 4: each pixel's sample count (uint32)
}

interface FilmData {
  # One film, held by the daemon while the capability is: its sums, then its sample counts.
  read @0 (offset :UInt64, bytes :UInt32) -> (data :Data);
  # `bytes` (at most 4 MiB) from `offset` (fewer at the end).
}

struct SampleShare {
  source @0 :Text;     # "this machine" or a node's address
  samples @1 :UInt64;  # pixel samples it rendered in the generation
}

interface SessionListener {
  # The client's, handed to NodeControl.session. The daemon sends at most 8 calls ahead of the
  # client's answers; beyond that it skips passes that are not a generation's last (a client
  # that does not keep up sees fewer passes, never a wrong one).

  pass @0 (generation :UInt64, spp :UInt32, targetSpp :UInt32, seconds :Float64,
           shares :List(SampleShare), retiredPixels :UInt64, film :FilmInfo, data :FilmData,
           width :UInt32, height :UInt32);
  # Every pixel of the generation's film now holds `spp` samples (retiredPixels: pixels that
  # stopped taking samples early under a noise threshold). `data` (with `film`) is that film
  # when the request asked for pass films, else null. width, height: the generation's frame.

  node @1 (address :Text, name :Text, joined :Bool, reason :Text);
  # A node joined (its data loaded for the first time) or was lost (reason).

  stopped @2 (generation :UInt64, spp :UInt32, seconds :Float64);
  # The time limit ended the generation at `spp` (the last pass sent).

  ended @3 (outcome :Outcome, message :Text);
  # The session cannot go on (failed, or shuttingDown); nothing follows.
}

interface ProgressListener {
  # The client's, handed to NodeControl.render.
  progress @0 (samplesDone :UInt64, samplesTotal :UInt64, stats :RenderStats);
  # At most 5 calls a second, and none while an earlier call is unanswered (a client that does
  # not answer misses updates; the job goes on).
}

# ---------------------------------------------------------------------------------------------
# The Primary's statistics (transport/primary.h ClusterRenderStats, member for member).

struct SchedulerStats {
  issuedUnits @0 :UInt64;
  duplicateUnits @1 :UInt64;
  acceptedUnits @2 :UInt64;
  rejectedResults @3 :UInt64;
  requeuedUnits @4 :UInt64;
  retiredTiles @5 :UInt64;
}

struct DeviceInfo {
  # core/render/device.h DeviceInfo (unlike protocol.capnp's, the kind stays text and the
  # ordinal travels: this is the daemon's own view, shown to its user).
  kind @0 :Text;
  name @1 :Text;
  memoryBytes @2 :UInt64;
  threads @3 :UInt32;
  computeMajor @4 :Int32;
  computeMinor @5 :Int32;
  ordinal @6 :Int32;
}

struct LocalDeviceStats {
  info @0 :DeviceInfo;
  workUnits @1 :UInt64;
  samples @2 :UInt64;
  raysTraced @3 :UInt64;
  duplicateResults @4 :UInt64;
  error @5 :Text;
}

struct NodeStats {
  address @0 :Text;
  name @1 :Text;
  nodeId @2 :Text;
  devices @3 :UInt32;
  workUnits @4 :UInt64;
  samples @5 :UInt64;
  raysTraced @6 :UInt64;
  duplicateResults @7 :UInt64;
  renderDataBytesRaw @8 :UInt64;
  renderDataBytesSent @9 :UInt64;
  chunksSent @10 :UInt64;
  chunksTotal @11 :UInt64;
  manifestBytes @12 :UInt64;
  resultBytes @13 :UInt64;
  resultBytesRaw @14 :UInt64;
  secondsToFirstResult @15 :Float64;
  secondsToDataLoaded @16 :Float64;
  uploadSeconds @17 :Float64;
  connections @18 :UInt32;
  losses @19 :UInt32;
  state @20 :Text;
  # The Primary's state names for a node ("done", "lost", "unreachable", ...; NodeRenderStats),
  # shown to people as they are.
  error @21 :Text;
}

struct RenderStats {
  seconds @0 :Float64;
  samples @1 :UInt64;
  raysTraced @2 :UInt64;
  scheduler @3 :SchedulerStats;
  local @4 :List(LocalDeviceStats);
  nodes @5 :List(NodeStats);
  renderDataChunks @6 :UInt64;
  renderDataRawBytes @7 :UInt64;
  renderDataEncodedBytes @8 :UInt64;
  encodeSeconds @9 :Float64;
}
