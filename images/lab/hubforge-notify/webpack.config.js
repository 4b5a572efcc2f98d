// Module and chunk ids in the order modules are first used, not hashed from their paths: the container entry's id
// otherwise depends on where the source sits on disk, so the same sources built in another folder gave other bytes
// (a different remoteEntry.<hash>.js), and the lab image was not reproducible across machines.
module.exports = {
  optimization: {
    moduleIds: 'natural',
    chunkIds: 'natural'
  }
};
