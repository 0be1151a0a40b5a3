"""textstats: an example Thresher worker that counts words in local text documents."""
